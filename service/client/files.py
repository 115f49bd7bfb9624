"""Writing a download beside its destination and checking it before it takes the destination's name."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import TracebackType

from service.client.errors import ChecksumMismatchError

CHUNK_BYTES = 256 * 1024


class VerifiedFile:
    """Chunks go to `<path>.part` and into a sha256; `finish()` renames it to `path` only when the size
    and the digest are the artifact's, and otherwise removes it (ChecksumMismatchError)."""

    def __init__(self, path: Path, *, sha256: str, byte_size: int) -> None:
        self.path = path
        self.part = path.with_name(path.name + ".part")
        self.expected_sha256 = sha256
        self.expected_size = byte_size
        self.written = 0
        self._digest = hashlib.sha256()
        self._file = self.part.open("wb")

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self._digest.update(chunk)
        self.written += len(chunk)

    def finish(self) -> Path:
        self._file.close()
        digest = self._digest.hexdigest()
        if self.written != self.expected_size or digest != self.expected_sha256:
            self.part.unlink(missing_ok=True)
            raise ChecksumMismatchError(
                f"the download has {self.written} bytes with sha256 {digest}; the artifact has"
                f" {self.expected_size} bytes with sha256 {self.expected_sha256}"
            )
        self.part.replace(self.path)
        return self.path

    def __enter__(self) -> VerifiedFile:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if not self._file.closed:  # not finished: an error or an interrupt
            self._file.close()
            self.part.unlink(missing_ok=True)
