"""Fixtures of the webhook tests: one real receiver on loopback, a fresh path on it per test, and the
session worker stopped for a test whose deliverer must run alone."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.receiver import Receiver
from tests.servers import ServiceProcess


@pytest.fixture(scope="session")
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def path() -> str:
    return f"/hooks/{uuid.uuid4().hex}"


@pytest.fixture
def only_deliverer(worker: ServiceProcess) -> Iterator[None]:
    """The test's deliverer runs alone: the session's worker, whose deliverer would claim too, is stopped
    meanwhile."""
    worker.stop()
    yield
    worker.start()
