"""The local backend: a directory; downloads go through ``/downloads/{token}``."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from service.storage.base import HashingReader, StoredObject, signed_url_seconds
from service.storage.tokens import DownloadTokens


class LocalStorage:
    """Files under a root directory, written to a temporary name and renamed into place."""

    def __init__(self, root: Path, tokens: DownloadTokens, public_base_url: str) -> None:
        self.root = root.resolve()
        self.tokens = tokens
        self.public_base_url = public_base_url.rstrip("/")

    def path(self, key: str) -> Path:
        """The file for key, refusing keys that would escape the root."""
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise ValueError(f"invalid storage key {key!r}")
        return path

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        content_type: str,  # noqa: ARG002 - a file keeps no content type or name: download tokens carry them
        filename: str,  # noqa: ARG002
    ) -> StoredObject:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{secrets.token_hex(6)}.partial")
        reader = HashingReader(chunks)
        try:
            with partial.open("wb") as out:
                for chunk in reader:
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        return StoredObject(key=key, byte_size=reader.byte_size, sha256=reader.sha256)

    def open(self, key: str) -> BinaryIO:
        return self.path(key).open("rb")

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def signed_url(self, key: str, *, filename: str, content_type: str, expires_in: int) -> str:
        seconds = signed_url_seconds(expires_in)
        token = self.tokens.issue(key, filename=filename, content_type=content_type, expires_in=seconds)
        return f"{self.public_base_url}/downloads/{token}"
