"""Tenant and API key rules: creation, revocation, authentication, plan limits and the rate limit."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session

from observability.metrics import record_rate_limited
from service.errors import NotFoundError, RateLimitedError, ValidationError
from service.models import utcnow
from service.outages import is_outage
from service.plans import Limits, resolve_limits
from service.principal import Principal
from service.redis import get_redis
from service.settings import get_settings
from service.tenants import repository
from service.tenants.keys import generate_key, hash_key, key_matches, parse_key
from service.tenants.limits import get_rate_limiter
from service.tenants.models import ALL_SCOPES, ApiKey, Tenant

log = logging.getLogger(__name__)

LAST_USED_HASH = "apikeys:last_used"
"""Redis hash key id -> Unix time of a use, until the scheduler writes it to api_keys.last_used_at."""


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


def get_tenant(session: Session, tenant_id: str) -> Tenant:
    """The tenant, or NOT_FOUND."""
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFoundError(f"no tenant {tenant_id}", field=["tenant"])
    return tenant


def create_key(
    session: Session, tenant_id: str, *, server_secret: str, scopes: list[str] | None = None
) -> IssuedKey:
    """A new API key for an existing tenant."""
    get_tenant(session, tenant_id)
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
    key = repository.active_key_by_prefix(session, parsed.prefix)
    if key is None or not key_matches(parsed.full, key.key_hash, server_secret):
        return None
    return Principal(
        tenant_id=key.tenant_id,
        key_id=key.id,
        scopes=frozenset(key.scopes),
        limits=_resolve((key.plan, key.limits)),
    )


def key_is_active(session: Session, key_id: str) -> bool:
    """Whether the key exists and is not revoked (sockets authenticated earlier check it again)."""
    return repository.key_is_active(session, key_id)


def note_key_used(key_id: str) -> None:
    """Remember that the key was used now: at most one Redis write per key per resolution, no DB write.

    A short-lived "seen" marker (SET NX EX) makes all but the first request of each period a single
    cheap no-op; the scheduler moves the times to Postgres (flush_key_last_used).
    """
    try:
        redis = get_redis()
        resolution = get_settings().key_last_used_resolution_seconds
        if redis.set(f"apikeys:seen:{key_id}", 1, nx=True, ex=resolution):
            redis.hset(LAST_USED_HASH, key_id, int(time.time()))
    except Exception as error:  # a request never fails for want of this
        log.warning(
            "could not record the use of API key %s: %s", key_id, error, exc_info=not is_outage(error)
        )


def flush_key_last_used(session: Session) -> int:
    """Write the uses Redis collected to api_keys.last_used_at (never moving it backwards); how many."""
    with get_redis().pipeline(transaction=True) as pipe:
        pipe.hgetall(LAST_USED_HASH)
        pipe.delete(LAST_USED_HASH)
        collected, _ = pipe.execute()
    if not collected:
        return 0
    uses = [(key.decode(), datetime.fromtimestamp(int(value), UTC)) for key, value in collected.items()]
    repository.record_key_uses(session, uses)
    return len(uses)


def list_keys(session: Session, tenant_id: str) -> list[ApiKey]:
    """A tenant's keys, oldest first (never their secrets: only prefix and hash are stored)."""
    return repository.keys_of(session, tenant_id)


def limits_for(session: Session, tenant_id: str) -> Limits:
    """The effective limits of a tenant (the default plan's if the row is not visible)."""
    return _resolve(repository.plan_of(session, tenant_id))


def lock_for_start(session: Session, tenant_id: str) -> Limits:
    """The tenant's limits, its row locked until the transaction ends: job starts of one tenant take
    turns, so two workers never both take its last max_running slot."""
    return _resolve(repository.plan_of(session, tenant_id, lock=True))


def _resolve(row: tuple[str, dict[str, Any] | None] | None) -> Limits:
    plan, overrides = row or ("", None)
    settings = get_settings()
    return resolve_limits(settings.plans, settings.default_plan, plan, overrides)


def check_rate(session: Session, tenant_id: str) -> Limits:
    """The tenant's limits, after taking a token from its mutation bucket (RATE_LIMITED when empty)."""
    limits = limits_for(session, tenant_id)
    if get_settings().rate_limits_enabled:
        try:
            get_rate_limiter().check(tenant_id, limits)
        except RateLimitedError:
            record_rate_limited("rate")
            raise
    return limits


def check_query_rate(principal: Principal) -> None:
    """Take a token from the tenant's query bucket (RATE_LIMITED when empty), at the limits it
    authenticated with: a query costs no database read for it."""
    if not get_settings().rate_limits_enabled:
        return
    try:
        get_rate_limiter().check_query(principal.tenant_id, principal.limits)
    except RateLimitedError:
        record_rate_limited("query_rate")
        raise
