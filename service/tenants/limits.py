"""Plan limits: what a tenant may do, and the Redis rate limiter for job-creating mutations.

Plans come from settings (``PLANS``); a tenant row names its plan and may override single limits in
its ``limits`` column. Rate limiting is GCRA in one Lua script, so the check and the update are one
atomic step in Redis whatever the number of API processes, and Redis's own clock is the only clock.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlmodel import Session, select

from service import outages
from service.errors import RateLimitedError

log = logging.getLogger(__name__)

LIMIT_NAMES = (
    "mutations_per_minute",
    "burst",
    "max_running",
    "max_queued",
    "max_text_chars",
    "max_webhook_endpoints",
)


@dataclass(frozen=True)
class Limits:
    """One tenant's effective limits (mutations_per_minute 0: no rate limit)."""

    mutations_per_minute: int
    burst: int
    max_running: int
    max_queued: int
    max_text_chars: int
    max_webhook_endpoints: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


assert tuple(f.name for f in fields(Limits)) == LIMIT_NAMES


def resolve_limits(plan: str, overrides: Mapping[str, Any] | None) -> Limits:
    """The plan's limits (the default plan's for an unknown name) with the tenant's overrides on top."""
    from service.settings import get_settings

    settings = get_settings()
    values = dict(settings.plans.get(plan) or settings.plans[settings.default_plan])
    for name, value in (overrides or {}).items():
        if name in LIMIT_NAMES and isinstance(value, int) and value >= 0:
            values[name] = value
    return Limits(**{name: int(values[name]) for name in LIMIT_NAMES})


def limits_for(session: Session, tenant_id: str) -> Limits:
    """The effective limits of a tenant (the default plan's if the row is not visible)."""
    from service.tenants.models import Tenant

    row = session.exec(select(Tenant.plan, Tenant.limits).where(Tenant.id == tenant_id)).first()
    plan, overrides = row if row is not None else ("", None)
    return resolve_limits(plan, overrides)


# GCRA: the bucket key holds the theoretical arrival time (TAT, ms). A request is allowed when the new
# TAT is at most `burst` emission intervals ahead of now. Returns {allowed, retry_after_ms}.
GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if now < allow_at then
  return {0, allow_at - now}
end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.max(1, math.ceil(new_tat - now)))
return {1, 0}
"""


class RateLimiter:
    """Job-creating mutations per tenant per minute, with a burst."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.script = redis.register_script(GCRA_SCRIPT)

    def check(self, tenant_id: str, limits: Limits) -> None:
        """Take one token for the tenant, or raise RateLimitedError with the seconds to wait."""
        if limits.mutations_per_minute <= 0:
            return
        interval_ms = 60_000 / limits.mutations_per_minute
        try:
            allowed, retry_ms = self.script(
                keys=[f"ratelimit:mutations:{tenant_id}"], args=[interval_ms, max(limits.burst, 1)]
            )
        except (RedisConnectionError, RedisTimeoutError) as error:
            # Fail open: jobs are committed to Postgres and enqueued once Redis is back, and the
            # queued-jobs quota (counted in Postgres) still bounds what one tenant can pile up.
            log.warning("rate limiter unavailable, letting the request through: %s", outages.describe(error))
            return
        if not allowed:
            raise RateLimitedError(max(1, math.ceil(float(retry_ms) / 1000)))

    def reset(self, tenant_id: str) -> None:
        self.redis.delete(f"ratelimit:mutations:{tenant_id}")


_limiter: RateLimiter | None = None


def get_rate_limiter() -> RateLimiter:
    """The process-wide limiter on the process-wide Redis connection."""
    global _limiter
    from service.redis import get_redis

    redis = get_redis()
    if _limiter is None or _limiter.redis is not redis:
        _limiter = RateLimiter(redis)
    return _limiter


def check_rate(session: Session, tenant_id: str) -> Limits:
    """The tenant's limits, after taking a token from its mutation bucket (RATE_LIMITED when empty)."""
    from service.settings import get_settings

    limits = limits_for(session, tenant_id)
    if get_settings().rate_limits_enabled:
        get_rate_limiter().check(tenant_id, limits)
    return limits
