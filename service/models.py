"""Shared column helpers for SQLModel tables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

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
