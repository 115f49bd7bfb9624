"""All SQL about tenants and their API keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, LiteralString, NamedTuple

from sqlalchemy import bindparam, delete, func, update
from sqlalchemy import select as sql_select
from sqlmodel import Session, col, select

from service.tenants.models import ApiKey, PortalLink, PortalSession, Tenant


class ActiveKey(NamedTuple):
    """An unrevoked key's columns, with its tenant's plan and limit overrides."""

    id: str
    tenant_id: str
    key_hash: str
    scopes: list[str]
    plan: str
    limits: dict[str, Any] | None


def active_key_by_prefix(session: Session, prefix: str) -> ActiveKey | None:
    """The unrevoked key with this prefix and its tenant's plan, in one query (it runs on every request)."""
    statement = (
        sql_select(  # sqlmodel's select types at most four columns
            col(ApiKey.id),
            col(ApiKey.tenant_id),
            col(ApiKey.key_hash),
            col(ApiKey.scopes),
            col(Tenant.plan),
            col(Tenant.limits),
        )
        .join(Tenant, col(Tenant.id) == col(ApiKey.tenant_id))
        .where(col(ApiKey.prefix) == prefix, col(ApiKey.revoked_at).is_(None))
    )
    row = session.execute(statement).first()
    if row is None:
        return None
    key_id, tenant_id, key_hash, scopes, plan, limits = row
    return ActiveKey(key_id, tenant_id, key_hash, list(scopes), plan, dict(limits) if limits else None)


def key_is_active(session: Session, key_id: str) -> bool:
    """Whether the key exists and is not revoked."""
    statement = select(ApiKey.id).where(ApiKey.id == key_id, col(ApiKey.revoked_at).is_(None))
    return session.exec(statement).first() is not None


LOCK_PLAN: LiteralString = "SELECT plan, limits FROM tenants WHERE id = {tenant} FOR NO KEY UPDATE"
"""plan_of(lock=True) in plain SQL, the tenant's id given as SQL in place of {tenant}."""


def plan_of(
    session: Session, tenant_id: str, *, lock: bool = False
) -> tuple[str, dict[str, Any] | None] | None:
    """The tenant's plan name and limit overrides, or None when the row is not visible; with `lock`,
    the row stays locked (FOR NO KEY UPDATE: inserts referring to it go on) until the transaction ends."""
    statement = select(Tenant.plan, Tenant.limits).where(Tenant.id == tenant_id)
    if lock:
        statement = statement.with_for_update(key_share=True)
    row = session.exec(statement).first()
    return None if row is None else (row[0], dict(row[1]) if row[1] is not None else None)


def record_key_uses(session: Session, uses: Sequence[tuple[str, datetime]]) -> None:
    """Move keys' last_used_at forward to these times (never backwards)."""
    statement = (
        update(ApiKey)
        .where(col(ApiKey.id) == bindparam("key_id"))
        .values(
            last_used_at=func.greatest(
                func.coalesce(ApiKey.last_used_at, bindparam("used_at")), bindparam("used_at")
            )
        )
        .execution_options(synchronize_session=False)
    )
    rows = [{"key_id": key_id, "used_at": used_at} for key_id, used_at in uses]
    session.connection().execute(statement, rows)


def keys_of(session: Session, tenant_id: str) -> list[ApiKey]:
    """A tenant's keys, oldest first."""
    statement = select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(col(ApiKey.created_at))
    return list(session.exec(statement))


def key_of(session: Session, tenant_id: str, key_id: str) -> ApiKey | None:
    """The tenant's key with this id, locked, or None."""
    statement = select(ApiKey).where(ApiKey.tenant_id == tenant_id, ApiKey.id == key_id).with_for_update()
    return session.exec(statement).first()


def claim_link(session: Session, token_hash: str, now: datetime) -> tuple[str, str] | None:
    """Mark the unused, unexpired link with this hash used; its (id, tenant id), or None. One statement,
    so two browsers racing with the same link cannot both win."""
    statement = (
        update(PortalLink)
        .where(
            col(PortalLink.token_hash) == token_hash,
            col(PortalLink.used_at).is_(None),
            col(PortalLink.expires_at) > now,
        )
        .values(used_at=now)
        .returning(col(PortalLink.id), col(PortalLink.tenant_id))
    )
    row = session.execute(statement).first()
    return None if row is None else (row[0], row[1])


def live_session(session: Session, token_hash: str, now: datetime) -> tuple[str, str, datetime] | None:
    """(session id, tenant id, expiry) of the unexpired portal session with this hash."""
    columns = (PortalSession.id, PortalSession.tenant_id, PortalSession.expires_at)
    statement = select(*columns).where(
        PortalSession.token_hash == token_hash, col(PortalSession.expires_at) > now
    )
    row = session.exec(statement).first()
    return None if row is None else (row[0], row[1], row[2])


def delete_session(session: Session, token_hash: str) -> None:
    session.execute(delete(PortalSession).where(col(PortalSession.token_hash) == token_hash))


def purge_portal_access(session: Session, now: datetime) -> int:
    """Delete expired links and sessions (every tenant's); how many rows."""
    links = session.execute(delete(PortalLink).where(col(PortalLink.expires_at) <= now))
    sessions = session.execute(delete(PortalSession).where(col(PortalSession.expires_at) <= now))
    return int(links.rowcount) + int(sessions.rowcount)  # type: ignore[attr-defined]
