"""Tenant and API key rules: creation, revocation, authentication."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, col, select

from service.errors import NotFoundError, ValidationError
from service.models import utcnow
from service.tenants.keys import generate_key, hash_key, key_matches, parse_key
from service.tenants.models import ALL_SCOPES, ApiKey, Tenant


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant and the key's scopes."""

    tenant_id: str
    key_id: str
    scopes: frozenset[str]


@dataclass(frozen=True)
class IssuedKey:
    """A key as issued: the only time its full text exists outside the caller."""

    key: ApiKey
    full_key: str


def create_tenant(session: Session, name: str, *, server_secret: str) -> tuple[Tenant, IssuedKey]:
    """A new tenant with its first API key (all scopes)."""
    name = name.strip()
    if not name or len(name) > 200:
        raise ValidationError("tenant name must be 1 to 200 characters", field=["name"])
    tenant = Tenant(name=name)
    session.add(tenant)
    session.flush()
    return tenant, create_key(session, tenant.id, server_secret=server_secret)


def create_key(
    session: Session, tenant_id: str, *, server_secret: str, scopes: list[str] | None = None
) -> IssuedKey:
    """A new API key for an existing tenant."""
    if session.get(Tenant, tenant_id) is None:
        raise NotFoundError(f"no tenant {tenant_id}", field=["tenant"])
    chosen = sorted(set(scopes)) if scopes else list(ALL_SCOPES)
    unknown = [scope for scope in chosen if scope not in ALL_SCOPES]
    if unknown:
        raise ValidationError(f"unknown scopes {unknown}; known: {list(ALL_SCOPES)}", field=["scope"])
    generated = generate_key()
    key = ApiKey(
        tenant_id=tenant_id,
        prefix=generated.prefix,
        key_hash=hash_key(generated.full, server_secret),
        scopes=chosen,
    )
    session.add(key)
    session.flush()
    return IssuedKey(key=key, full_key=generated.full)


def revoke_key(session: Session, key_id: str) -> ApiKey:
    """Revoke a key at once; requests with it get 401 from now on."""
    key = session.get(ApiKey, key_id)
    if key is None:
        raise NotFoundError(f"no API key {key_id}")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.add(key)
        session.flush()
    return key


def authenticate(session: Session, authorization: str | None, *, server_secret: str) -> Principal | None:
    """The principal for an ``Authorization: Bearer ck_...`` header, or None for any bad key."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    parsed = parse_key(token.strip())
    if parsed is None:
        return None
    # Plain columns, not an ApiKey object: this runs on every request.
    columns = (ApiKey.id, ApiKey.tenant_id, ApiKey.key_hash, ApiKey.scopes)
    statement = select(*columns).where(ApiKey.prefix == parsed.prefix, col(ApiKey.revoked_at).is_(None))
    row = session.exec(statement).first()
    if row is None:
        return None
    key_id, tenant_id, key_hash, scopes = row
    if not key_matches(parsed.full, key_hash, server_secret):
        return None
    return Principal(tenant_id=tenant_id, key_id=key_id, scopes=frozenset(scopes))
