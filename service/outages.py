"""Postgres or Redis briefly out of reach.

A request that meets such an outage fails with HTTP 503, code UNAVAILABLE and a Retry-After, not a
masked 500: nothing was committed, so the caller can simply retry (a mutation with the same
idempotencyKey is safe to repeat). Work that can wait for Redis does not fail at all: the rate limiter
lets requests through and the outbox sweep enqueues the jobs once Redis is back.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import psycopg
import redis.exceptions
import sqlalchemy.exc

CODE = "UNAVAILABLE"
RETRY_AFTER_SECONDS = 1
MESSAGE = "a backing service is briefly unavailable; retry shortly (mutations with the same idempotencyKey)"
OUTAGES: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,  # includes refused, reset and busy-loading
    redis.exceptions.TimeoutError,
    sqlalchemy.exc.OperationalError,  # what psycopg's connection failures become through SQLAlchemy
    sqlalchemy.exc.InterfaceError,
    psycopg.OperationalError,  # refused, reset, server shutting down
    psycopg.InterfaceError,  # the connection was closed under us
)


def is_outage(error: BaseException | None) -> bool:
    """Whether error (or what caused it) is a lost or refused connection to Postgres or Redis."""
    return any(isinstance(cause, OUTAGES) for cause in _chain(error))


def _chain(error: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def log_failure(logger: logging.Logger, message: str, *args: object) -> None:
    """Log the exception being handled: one WARNING line for an outage (it is expected while the
    outage lasts and is retried), ERROR with the traceback for anything else."""
    error = sys.exc_info()[1]
    if error is not None and is_outage(error):
        logger.warning(message + ": %s", *args, describe(error))
    else:
        logger.exception(message, *args)


def describe(error: BaseException) -> str:
    """The first line of the error: enough for a log line during an outage, without a traceback."""
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
