"""Shared column helpers for SQLModel tables."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import Any, TypeVar, cast

from sqlalchemy import Column, DateTime
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import SQLModel


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def timestamp_column(*, nullable: bool = False, index: bool = False) -> Any:
    """A ``timestamptz`` column."""
    return Column(DateTime(timezone=True), nullable=nullable, index=index)


def jsonb_column(*, nullable: bool = False) -> Any:
    """A ``jsonb`` column."""
    return Column(JSONB, nullable=nullable)


# Constraint names every migration and model share (alembic autogenerate and the schema test rely on it).
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


_Row = TypeVar("_Row", bound=SQLModel)


@cache
def _defaults(model: type[SQLModel]) -> tuple[dict[str, Any], dict[str, Callable[[], Any]], frozenset[str]]:
    """A table model's field defaults, its default factories, and its required fields."""
    static: dict[str, Any] = {}
    factories: dict[str, Callable[[], Any]] = {}
    required = set()
    for name, field in model.model_fields.items():
        if field.default_factory is not None:
            factories[name] = cast(Callable[[], Any], field.default_factory)
        elif field.is_required():
            required.add(name)
        else:
            static[name] = field.default
    return static, factories, frozenset(required)


def construct(model: type[_Row], **values: Any) -> _Row:
    """A new (transient) row object, as `model(**values)` makes it, for rows written in plain SQL on
    hot paths: its fields set directly as SQLAlchemy sets those of a row it loads. `model(**values)`
    sets each through SQLModel's, pydantic's and SQLAlchemy's attribute machinery and asks pydantic for
    each default (a Job took 160 µs). Values are not validated, as `model(**values)` does not for a
    table model."""
    static, factories, required = _defaults(model)
    missing = required - values.keys()
    if missing:
        raise TypeError(f"{model.__name__} needs {sorted(missing)}")
    fields = {**static, **{name: make() for name, make in factories.items() if name not in values}, **values}
    row: _Row = model._sa_class_manager.new_instance()  # type: ignore[attr-defined]
    row.__dict__.update(fields)
    object.__setattr__(row, "__pydantic_fields_set__", set(values))
    return row
