"""The kinds registry: new kinds plug in by calling ``register`` at import time."""

from __future__ import annotations

import importlib

from service.kinds.base import Kind

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
    from service.settings import get_settings

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
