"""The configured storage backend."""

from __future__ import annotations

from functools import lru_cache

from service.settings import Settings, get_settings
from service.storage.base import Storage
from service.storage.local import LocalStorage
from service.storage.tokens import DownloadTokens


def make_storage(settings: Settings) -> Storage:
    """A backend for these settings."""
    if settings.storage_backend == "gcs":
        from service.storage.gcs import GcsStorage  # google-cloud-storage is only imported when used

        return GcsStorage(
            settings.gcs_bucket,
            project=settings.gcs_project,
            chunk_bytes=settings.gcs_chunk_bytes,
            retry_seconds=settings.gcs_retry_seconds,
            emulator_host=settings.storage_emulator_host,
            signer_email=settings.gcs_signer_email,
        )
    return LocalStorage(settings.artifacts_dir, DownloadTokens(settings.secret_key), settings.public_base_url)


@lru_cache(maxsize=1)
def get_storage() -> Storage:
    """The process-wide backend."""
    return make_storage(get_settings())
