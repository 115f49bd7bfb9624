"""Fixtures of the webhook tests: one real receiver on loopback, and a fresh path on it per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.receiver import Receiver


@pytest.fixture(scope="session")
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def path() -> str:
    return f"/hooks/{uuid.uuid4().hex}"
