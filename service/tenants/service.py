"""Tenant and API key rules: creation, revocation, authentication, plan limits and the rate limit; and
the portal's sign-in: one-time links and the browser sessions they open."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString

from sqlmodel import Session

from observability.metrics import record_rate_limited
from service.db import Statement, after_commit
from service.errors import NotFoundError, RateLimitedError, ValidationError
from service.models import utcnow
from service.outages import is_outage
from service.plans import Limits, resolve_limits
from service.principal import Principal
from service.redis import RedisRead, get_redis
from service.settings import get_settings
from service.tenants import repository
from service.tenants.keys import generate_key, hash_key, key_matches, parse_key
from service.tenants.limits import get_rate_limiter
from service.tenants.models import ALL_SCOPES, ApiKey, PortalLink, PortalSession, Tenant
from service.tenants.principals import LAST_USED_HASH, mark_limits_changed, mark_revoked

log = logging.getLogger(__name__)

DEFAULT_LINK_TTL_SECONDS = 600
MAX_LINK_TTL_SECONDS = 24 * 3600
PORTAL_LOGIN_PATH = "/portal/login/"
OPERATOR = "operator"
"""`created_by` of a portal link made with the CLI."""


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


def revoke_tenant_key(session: Session, tenant_id: str, key_id: str) -> ApiKey:
    """Revoke one of the tenant's keys (another tenant's id is NOT_FOUND, as a missing one)."""
    key = repository.key_of(session, tenant_id, key_id)
    if key is None:
        raise NotFoundError("no such API key", field=["id"])
    _revoke(session, key)
    return key


def revoke_key(session: Session, key_id: str) -> ApiKey:
    """Revoke a key at once; requests with it get 401 from now on."""
    key = session.get(ApiKey, key_id)
    if key is None:
        raise NotFoundError(f"no API key {key_id}")
    _revoke(session, key)
    return key


def _revoke(session: Session, key: ApiKey) -> None:
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.add(key)
        session.flush()
    key_id = key.id
    after_commit(session, lambda: mark_revoked(key_id))  # processes that remember the key drop it


def set_limits(
    session: Session, tenant_id: str, *, plan: str | None = None, overrides: dict[str, Any] | None = None
) -> Tenant:
    """Change the tenant's plan and/or merge limit overrides into its own; every process applies them
    from its next request once this commits."""
    tenant = get_tenant(session, tenant_id)
    if plan is not None:
        tenant.plan = plan
    if overrides:
        tenant.limits = {**(tenant.limits or {}), **overrides}
    session.add(tenant)
    session.flush()
    after_commit(session, mark_limits_changed, once="limits-changed")
    return tenant


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


def last_used(keys: list[ApiKey]) -> dict[str, datetime | None]:
    """Each key's last use, including the uses Redis holds that the scheduler has not written yet."""
    used = {key.id: key.last_used_at for key in keys}
    if not keys:
        return used
    try:
        pending = get_redis().hmget(LAST_USED_HASH, [key.id for key in keys])
    except Exception as error:  # the stored times are good enough when Redis is away
        log.warning("could not read pending key uses: %s", error, exc_info=not is_outage(error))
        return used
    for key, value in zip(keys, pending, strict=True):
        if value is not None:
            noted = datetime.fromtimestamp(int(value), UTC)
            stored = used[key.id]
            used[key.id] = noted if stored is None else max(stored, noted)
    return used


def limits_for(session: Session, tenant_id: str) -> Limits:
    """The effective limits of a tenant (the default plan's if the row is not visible)."""
    return _resolve(repository.plan_of(session, tenant_id))


def lock_for_start(session: Session, tenant_id: str) -> Limits:
    """The tenant's limits, its row locked until the transaction ends: job starts of one tenant take
    turns, so two workers never both take its last max_running slot."""
    return _resolve(repository.plan_of(session, tenant_id, lock=True))


def lock_for_start_statement(tenant: LiteralString, parameters: Mapping[str, Any]) -> Statement:
    """lock_for_start in plain SQL, for read_pipelined: `tenant` is SQL giving the tenant's id (with
    its parameters); limits_locked() reads its rows."""
    return repository.LOCK_PLAN.format(tenant=tenant), parameters


def limits_locked(rows: Sequence[Mapping[str, Any]]) -> Limits:
    """The limits of the tenant that lock_for_start_statement locked."""
    return _resolve((rows[0]["plan"], rows[0]["limits"]) if rows else None)


def _resolve(row: tuple[str, dict[str, Any] | None] | None) -> Limits:
    plan, overrides = row or ("", None)
    settings = get_settings()
    return resolve_limits(settings.plans, settings.default_plan, plan, overrides)


def check_rate(session: Session, caller: Principal | str, along: Sequence[RedisRead] = ()) -> Limits:
    """The tenant's limits, after taking a token from its mutation bucket (RATE_LIMITED when empty).

    A principal brings the limits it authenticated with (no database read); a tenant id reads them.
    along: Redis reads sent in the same round trip when the rate is checked (see RateLimiter.check)."""
    if isinstance(caller, Principal):
        tenant_id, limits = caller.tenant_id, caller.limits
    else:
        tenant_id, limits = caller, limits_for(session, caller)
    if get_settings().rate_limits_enabled:
        try:
            get_rate_limiter().check(tenant_id, limits, along)
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


# --- the portal's sign-in ------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedLink:
    """A one-time sign-in link as issued: the only time its token exists outside the browser."""

    url: str
    expires_at: datetime


@dataclass(frozen=True)
class SignedIn:
    """A portal session: who it acts for (every scope of the tenant's) and until when."""

    principal: Principal
    expires_at: datetime


@dataclass(frozen=True)
class OpenedSession:
    """A portal session just opened by a link: the token goes into the browser's cookie, once."""

    token: str
    signed_in: SignedIn


def create_portal_link(
    session: Session, tenant_id: str, *, created_by: str, ttl_seconds: int | None, server_secret: str
) -> IssuedLink:
    """A URL that signs a browser in to the tenant's portal once, within ttl_seconds (default 10 minutes)."""
    ttl = DEFAULT_LINK_TTL_SECONDS if ttl_seconds is None else ttl_seconds
    if not 1 <= ttl <= MAX_LINK_TTL_SECONDS:
        raise ValidationError(
            f"the link's lifetime must be 1 to {MAX_LINK_TTL_SECONDS} seconds", field=["ttl"]
        )
    get_tenant(session, tenant_id)
    token = secrets.token_urlsafe(32)
    expires_at = utcnow() + timedelta(seconds=ttl)
    session.add(
        PortalLink(
            tenant_id=tenant_id,
            token_hash=hash_key(token, server_secret),
            created_by=created_by,
            expires_at=expires_at,
        )
    )
    session.flush()
    base = get_settings().public_base_url.rstrip("/")
    return IssuedLink(url=f"{base}{PORTAL_LOGIN_PATH}{token}", expires_at=expires_at)


def open_portal_session(session: Session, link_token: str, *, server_secret: str) -> OpenedSession | None:
    """Use up a sign-in link and open a session for its tenant; None when the link is unknown, used or
    expired (which of these is not said). Runs across tenants, as authentication does."""
    now = utcnow()
    claimed = repository.claim_link(session, hash_key(link_token, server_secret), now)
    if claimed is None:
        return None
    link_id, tenant_id = claimed
    token = secrets.token_urlsafe(32)
    row = PortalSession(
        tenant_id=tenant_id,
        token_hash=hash_key(token, server_secret),
        link_id=link_id,
        expires_at=now + timedelta(seconds=get_settings().portal_session_seconds),
    )
    session.add(row)
    session.flush()
    return OpenedSession(token=token, signed_in=_signed_in(session, row.id, tenant_id, row.expires_at))


def portal_session(session: Session, token: str, *, server_secret: str) -> SignedIn | None:
    """The live portal session whose cookie holds this token, or None. Runs across tenants."""
    if not token or len(token) > 200:
        return None
    found = repository.live_session(session, hash_key(token, server_secret), utcnow())
    return None if found is None else _signed_in(session, *found)


def end_portal_session(session: Session, token: str, *, server_secret: str) -> None:
    """Sign out: the session's token stops working at once."""
    repository.delete_session(session, hash_key(token, server_secret))


def purge_portal_access(session: Session) -> int:
    """Delete expired sign-in links and sessions of every tenant (a scheduler sweep); how many."""
    return repository.purge_portal_access(session, utcnow())


def _signed_in(session: Session, session_id: str, tenant_id: str, expires_at: datetime) -> SignedIn:
    principal = Principal(
        tenant_id=tenant_id,
        key_id=session_id,
        scopes=frozenset(ALL_SCOPES),
        limits=limits_for(session, tenant_id),
    )
    return SignedIn(principal=principal, expires_at=expires_at)
