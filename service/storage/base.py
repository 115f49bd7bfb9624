"""The storage interface every backend implements."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol


@dataclass(frozen=True)
class StoredObject:
    """What was stored: its key, size and SHA-256."""

    key: str
    byte_size: int
    sha256: str


class Storage(Protocol):
    """Where artifacts live. Uploads stream; a re-run with the same key overwrites."""

    def put_stream(
        self, key: str, chunks: Iterable[bytes], *, content_type: str, filename: str
    ) -> StoredObject:
        """Store the chunks under key; the object appears whole or not at all."""

    def open(self, key: str) -> BinaryIO:
        """Read an object (FileNotFoundError when absent)."""

    def exists(self, key: str) -> bool:
        """Whether an object is stored under key."""

    def delete(self, key: str) -> None:
        """Delete an object; deleting an absent one is not an error."""

    def signed_url(self, key: str, *, filename: str, content_type: str, expires_in: int) -> str:
        """A URL that lets anyone holding it GET the object until it expires."""


MAX_SIGNED_URL_SECONDS = 7 * 24 * 3600  # GCS refuses V4 signatures valid for longer


def signed_url_seconds(expires_in: int) -> int:
    """How long a download URL lives: at least 1 s (an expiry in the past is refused), at most 7 days."""
    if expires_in < 1:
        raise ValueError(f"a download URL must expire in the future (expires_in={expires_in})")
    return min(expires_in, MAX_SIGNED_URL_SECONDS)


MAX_FILENAME_BYTES = 128  # of UTF-8: well inside a file system's 255 and the key's column
MAX_EXTENSION_CHARS = 16
FALLBACK_FILENAME = "artifact"
# Control, format (bidi overrides, zero-width), surrogate, private-use, unassigned, line/paragraph
# separators: nothing a file name needs, and what makes one lie about itself or break a header.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_SEPARATORS = re.compile(r"[/\\]")
_UNTRIMMED = re.compile(r"^[\s.]+|\s+$")


def safe_filename(name: str) -> str:
    """A kind's filename made safe to store and to name in a download: its last path segment, unsafe
    characters as "_", no leading dots or surrounding spaces, at most MAX_FILENAME_BYTES of UTF-8
    (keeping the extension); FALLBACK_FILENAME when nothing is left. Idempotent; odd names that are
    safe (spaces, accents, quotes) stay as they are."""
    segments = [part for part in _SEPARATORS.split(unicodedata.normalize("NFC", name)) if part.strip(" .")]
    cleaned = "".join(
        "_" if unicodedata.category(char) in _UNSAFE_CATEGORIES else char for char in (segments or [""])[-1]
    )
    cleaned = _UNTRIMMED.sub("", cleaned)
    if len(cleaned.encode()) > MAX_FILENAME_BYTES:
        stem, dot, extension = cleaned.rpartition(".")
        if not (dot and stem and len(extension) <= MAX_EXTENSION_CHARS):
            stem, extension = cleaned, ""
        room = MAX_FILENAME_BYTES - len(extension.encode()) - len(dot if extension else "")
        stem = stem.encode()[:room].decode(errors="ignore")
        cleaned = _UNTRIMMED.sub("", f"{stem}.{extension}" if extension else stem)
    return cleaned or FALLBACK_FILENAME


def artifact_key(tenant_id: str, job_id: str, filename: str) -> str:
    """Where a job's artifact lives: per tenant, per job, so re-runs overwrite and tenants never collide.
    The filename is made safe first: whatever a kind returns, the key stays under the job's prefix."""
    return f"tenants/{tenant_id}/jobs/{job_id}/{safe_filename(filename)}"


class HashingReader:
    """Wraps a chunk iterator, counting bytes and hashing them as they pass."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._digest = hashlib.sha256()
        self.byte_size = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self._digest.update(chunk)
            self.byte_size += len(chunk)
            yield chunk

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()
