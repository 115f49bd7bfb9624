"""What a kind is and what its handler may use while it runs."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel


class JobContext(Protocol):
    """What a running handler can see and do."""

    job_id: str
    tenant_id: str
    attempt: int

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress (0..1) and a human-readable stage."""


@dataclass(frozen=True)
class ArtifactOutput:
    """A handler's result file, produced as a stream of chunks (never whole in memory)."""

    filename: str
    content_type: str
    chunks: Iterable[bytes]


class JobFailure(Exception):
    """A handler's way to fail a job with a stable code; ``retryable`` marks transient causes."""

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


Handler = Callable[[JobContext, Any], ArtifactOutput | None]


@dataclass(frozen=True)
class Kind:
    """A registered job kind."""

    name: str
    input_model: type[BaseModel]
    handler: Handler
    content_type: str
    timeout_seconds: int = 600
    max_attempts: int = 3
    # Loads what every run needs (libraries, models) once per worker, before it forks per job.
    prepare: Callable[[], object] | None = None
