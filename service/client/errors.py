"""Typed errors of the Claimcheck SDK, one class per stable code of the API.

Every failure a caller can act on is a `ClaimcheckError` whose `code` is the API's (a userError's, a
GraphQL error's `extensions.code`, or the HTTP status's meaning); catch a subclass to act on one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class ClaimcheckError(Exception):
    """A failure with the API's stable code, its message, and the input field it is about."""

    code = "ERROR"

    def __init__(self, message: str, *, code: str | None = None, field: Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.field = list(field) if field else None

    def __str__(self) -> str:
        where = f" ({'.'.join(self.field)})" if self.field else ""
        return f"{self.code}: {self.message}{where}"


class AuthenticationError(ClaimcheckError):
    """The API key is missing, malformed, unknown or revoked (HTTP 401, WebSocket close 4403)."""

    code = "UNAUTHENTICATED"


class ForbiddenError(ClaimcheckError):
    """The API key lacks a scope this needs."""

    code = "FORBIDDEN"


class NotFoundError(ClaimcheckError):
    code = "NOT_FOUND"


class ValidationError(ClaimcheckError):
    code = "VALIDATION"


class InvalidStateError(ClaimcheckError):
    code = "INVALID_STATE"


class IdempotencyConflictError(ClaimcheckError):
    code = "IDEMPOTENCY_CONFLICT"


class QuotaExceededError(ClaimcheckError):
    code = "QUOTA_EXCEEDED"


class RateLimitedError(ClaimcheckError):
    """Too many requests: `retry_after` is how many seconds to wait."""

    code = "RATE_LIMITED"

    def __init__(self, message: str, *, retry_after: float, field: Sequence[str] | None = None) -> None:
        super().__init__(message, field=field)
        self.retry_after = retry_after


class UnavailableError(ClaimcheckError):
    """The service cannot answer now (an outage of its database); retry after `retry_after` seconds."""

    code = "UNAVAILABLE"

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConnectionFailedError(ClaimcheckError):
    """The API could not be reached, or the connection dropped."""

    code = "CONNECTION_FAILED"


class ChecksumMismatchError(ClaimcheckError):
    """A downloaded file's size or sha256 is not the artifact's: nothing was written."""

    code = "CHECKSUM_MISMATCH"


_BY_CODE: dict[str, type[ClaimcheckError]] = {
    cls.code: cls
    for cls in (
        AuthenticationError,
        ForbiddenError,
        NotFoundError,
        ValidationError,
        InvalidStateError,
        IdempotencyConflictError,
        QuotaExceededError,
        UnavailableError,
    )
}
_BY_CODE["BAD_REQUEST"] = ValidationError


def _retry_after(value: Any, default: float = 1.0) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def error_for(
    code: str | None,
    message: str,
    *,
    field: Sequence[str] | None = None,
    extensions: Mapping[str, Any] | None = None,
    retry_after: Any = None,
) -> ClaimcheckError:
    """The typed error for an API code (a userError's or a GraphQL error's)."""
    code = code or "ERROR"
    if code == "RATE_LIMITED":
        seconds = retry_after if retry_after is not None else (extensions or {}).get("retryAfter")
        return RateLimitedError(message, retry_after=_retry_after(seconds), field=field)
    if code == "UNAVAILABLE":
        return UnavailableError(message, retry_after=_retry_after(retry_after))
    cls = _BY_CODE.get(code, ClaimcheckError)
    error = cls(message, field=field)
    error.code = code
    return error


def from_graphql_errors(errors: Sequence[Mapping[str, Any]], retry_after: Any = None) -> ClaimcheckError:
    """The typed error for the first of a response's GraphQL errors."""
    first = errors[0] if errors else {}
    extensions = first.get("extensions") or {}
    return error_for(
        extensions.get("code"),
        str(first.get("message") or "the request failed"),
        field=extensions.get("field"),
        extensions=extensions,
        retry_after=retry_after,
    )


def check_user_errors(data: Mapping[str, Any]) -> None:
    """Raise the first userError of a mutation's payload (the API's stable code), if there is one."""
    for value in data.values():
        if isinstance(value, Mapping) and value.get("userErrors"):
            first = value["userErrors"][0]
            raise error_for(
                first.get("code"),
                first.get("message", ""),
                field=first.get("field"),
                extensions=first.get("extensions"),
            )


def from_http(status_code: int, headers: Mapping[str, str], body: Any) -> ClaimcheckError:
    """The typed error for an HTTP answer that is not 2xx."""
    retry_after = headers.get("retry-after")
    errors = body.get("errors") if isinstance(body, Mapping) else None
    if status_code == 401:
        detail = body.get("detail") if isinstance(body, Mapping) else None
        return AuthenticationError(f"the API refused the key: {detail or 'invalid or missing API key'}")
    if errors:
        return from_graphql_errors(errors, retry_after)
    if status_code == 429:
        return RateLimitedError("rate limit exceeded", retry_after=_retry_after(retry_after))
    if status_code == 503:
        return UnavailableError("the service is unavailable", retry_after=_retry_after(retry_after))
    return ClaimcheckError(f"the API answered HTTP {status_code}", code=f"HTTP_{status_code}")
