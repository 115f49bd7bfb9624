"""Tenant, API key and portal sign-in tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ARRAY, String
from sqlmodel import Column, Field, SQLModel

from service.ids import new_id
from service.models import jsonb_column, timestamp_column, utcnow

ALL_SCOPES = ("jobs:read", "jobs:write", "webhooks:manage", "portal")
"""Every scope a key may hold; `portal` lets a key do nothing but mint portal sign-in links."""


class Tenant(SQLModel, table=True):
    __tablename__ = "tenants"

    id: str = Field(default_factory=lambda: new_id("ten"), primary_key=True)
    name: str = Field(max_length=200)
    plan: str = Field(default="default", max_length=50)
    """A name from PLANS; an unknown one (like "default") gets DEFAULT_PLAN's limits."""
    limits: dict[str, Any] | None = Field(default=None, sa_column=jsonb_column(nullable=True))
    """Overrides of single plan limits for this tenant, e.g. {"max_running": 5}."""
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class ApiKey(SQLModel, table=True):
    """An API key; only its prefix (for lookup) and a keyed hash of the whole key are stored."""

    __tablename__ = "api_keys"

    id: str = Field(default_factory=lambda: new_id("key"), primary_key=True)
    tenant_id: str = Field(foreign_key="tenants.id", index=True, ondelete="CASCADE")
    prefix: str = Field(max_length=16, unique=True)
    key_hash: str = Field(max_length=64)
    scopes: list[str] = Field(
        default_factory=lambda: list(ALL_SCOPES), sa_column=Column(ARRAY(String), nullable=False)
    )
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    revoked_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    last_used_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    """To the minute (KEY_LAST_USED_RESOLUTION_SECONDS): Redis holds it until the scheduler flushes it."""


class PortalLink(SQLModel, table=True):
    """A one-time sign-in link to the portal; only a keyed hash of its token is stored."""

    __tablename__ = "portal_links"

    id: str = Field(default_factory=lambda: new_id("pln"), primary_key=True)
    tenant_id: str = Field(foreign_key="tenants.id", index=True, ondelete="CASCADE")
    token_hash: str = Field(max_length=64, unique=True)
    created_by: str = Field(max_length=40)
    """The API key id that asked for it, or "operator" (the CLI)."""
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    expires_at: datetime = Field(sa_column=timestamp_column(index=True))
    used_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))


class PortalSession(SQLModel, table=True):
    """A signed-in browser: the cookie holds the token, the table a keyed hash of it."""

    __tablename__ = "portal_sessions"

    id: str = Field(default_factory=lambda: new_id("pse"), primary_key=True)
    tenant_id: str = Field(foreign_key="tenants.id", index=True, ondelete="CASCADE")
    token_hash: str = Field(max_length=64, unique=True)
    link_id: str = Field(max_length=40)
    """The link it was opened with (an audit trail; the link row may be purged before the session)."""
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    expires_at: datetime = Field(sa_column=timestamp_column(index=True))
