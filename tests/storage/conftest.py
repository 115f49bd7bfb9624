"""The GCS emulator (started once per test session, only when storage tests run) and backends on it."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from service.storage.gcs import GcsStorage
from tests.gcs import GcsEmulator, ServiceAccountKey, make_service_account_key


@pytest.fixture(scope="session")
def gcs_emulator(workdir: Path) -> Iterator[GcsEmulator]:
    emulator = GcsEmulator(workdir / "gcs", workdir / "gcs.log").start()
    yield emulator
    emulator.stop()


@pytest.fixture(scope="session")
def gcs_key(workdir: Path) -> ServiceAccountKey:
    """The test service account: URLs are signed with its private key, checked with its public key."""
    return make_service_account_key(workdir / "credentials")


@pytest.fixture
def make_gcs(
    gcs_emulator: GcsEmulator, gcs_key: ServiceAccountKey, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., GcsStorage]:
    """A GcsStorage on a fresh bucket of the emulator, signing with the test key file."""
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(gcs_key.path))

    def make(
        endpoint: str | None = None, *, chunk_bytes: int = 256 * 1024, retry_seconds: float = 30
    ) -> GcsStorage:
        bucket = f"claimcheck-{secrets.token_hex(4)}"
        gcs_emulator.create_bucket(bucket)
        return GcsStorage(
            bucket,
            emulator_host=endpoint or gcs_emulator.url,
            chunk_bytes=chunk_bytes,
            retry_seconds=retry_seconds,
        )

    return make


@pytest.fixture
def gcs(make_gcs: Callable[..., GcsStorage]) -> GcsStorage:
    return make_gcs()
