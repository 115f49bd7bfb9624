"""Job kinds: what a kind is, what its handler may use while it runs, and the registry.

New kinds plug in by calling ``register`` at import time; the built-in ones live in service/kinds/,
and ``KIND_MODULES`` names more modules to import.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel

from service.settings import get_settings


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


_KINDS: dict[str, Kind] = {}
_builtins_loaded = False

BUILTIN_KIND_MODULES = ("service.kinds.speech", "service.kinds.export")


def register(kind: Kind) -> Kind:
    """Add a kind; a second kind of the same name is a programming error."""
    if kind.name in _KINDS and _KINDS[kind.name] is not kind:
        raise ValueError(f"kind {kind.name!r} is already registered")
    _KINDS[kind.name] = kind
    return kind


def load_builtin_kinds() -> None:
    """Import the modules that register the built-in kinds and KIND_MODULES' (once)."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    for module in (*BUILTIN_KIND_MODULES, *get_settings().kind_modules):
        importlib.import_module(module)
    _builtins_loaded = True


def get_kind(name: str) -> Kind:
    """The kind registered under name (KeyError if none)."""
    load_builtin_kinds()
    return _KINDS[name]


def prepare_kinds() -> None:
    """Load the built-in kinds and everything their runs need (a worker calls it before forking)."""
    load_builtin_kinds()
    for kind in _KINDS.values():
        if kind.prepare is not None:
            kind.prepare()


def all_kinds() -> list[Kind]:
    """Every registered kind."""
    load_builtin_kinds()
    return list(_KINDS.values())


def kind_names() -> list[str]:
    """Every registered kind's name."""
    load_builtin_kinds()
    return sorted(_KINDS)
