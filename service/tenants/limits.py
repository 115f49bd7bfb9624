"""The per-tenant rate limiter: GCRA in one Lua script, so the check and the update are one atomic
step in Redis whatever the number of API processes, and Redis's own clock is the only clock."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service import outages
from service.errors import RateLimitedError
from service.plans import Limits
from service.redis import RedisRead, get_redis

log = logging.getLogger(__name__)

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
    """Per tenant and minute, with a burst: job-creating mutations, and queries, each in a bucket."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.script = redis.register_script(GCRA_SCRIPT)

    def check(self, tenant_id: str, limits: Limits, along: Sequence[RedisRead] = ()) -> None:
        """Take one token from the tenant's mutation bucket, or raise RateLimitedError; along: reads
        sent in the same round trip (each given its answer, unless Redis could not be reached)."""
        self._take(f"ratelimit:mutations:{tenant_id}", limits.mutations_per_minute, limits.burst, along)

    def check_query(self, tenant_id: str, limits: Limits) -> None:
        """Take one token from the tenant's query bucket, or raise RateLimitedError."""
        self._take(f"ratelimit:queries:{tenant_id}", limits.queries_per_minute, limits.query_burst)

    def _take(self, bucket: str, per_minute: int, burst: int, along: Sequence[RedisRead] = ()) -> None:
        """Take one token from bucket (per_minute 0: unlimited), or raise RateLimitedError with the
        seconds to wait."""
        if per_minute <= 0 and not along:
            return
        arguments = [60_000 / per_minute, max(burst, 1)] if per_minute > 0 else []
        try:
            if not along:
                allowed, retry_ms = self.script(keys=[bucket], args=arguments)
            else:
                allowed, retry_ms = self._take_along(bucket, arguments, along)
        except (RedisConnectionError, RedisTimeoutError) as error:
            # Fail open: jobs are committed to Postgres and enqueued once Redis is back, and the
            # queued-jobs quota (counted in Postgres) still bounds what one tenant can pile up.
            log.warning("rate limiter unavailable, letting the request through: %s", outages.describe(error))
            return
        if not allowed:
            raise RateLimitedError(max(1, math.ceil(float(retry_ms) / 1000)))

    def _take_along(self, bucket: str, arguments: list[float], along: Sequence[RedisRead]) -> list[Any]:
        """The script's answer ([1, 0] when unlimited), the reads' answers handed over, in one pipeline
        (EVAL: a script run by SHA in a pipeline would cost a round trip to check it is loaded)."""
        with self.redis.pipeline(transaction=False) as pipeline:
            if arguments:
                pipeline.eval(GCRA_SCRIPT, 1, bucket, *arguments)
            for ask, _ in along:
                ask(pipeline)
            answers = pipeline.execute()
        for (_, keep), answer in zip(along, answers[len(answers) - len(along) :], strict=True):
            keep(answer)
        return list(answers[0]) if arguments else [1, 0]

    def reset(self, tenant_id: str) -> None:
        self.redis.delete(f"ratelimit:mutations:{tenant_id}", f"ratelimit:queries:{tenant_id}")


_limiter: RateLimiter | None = None


def get_rate_limiter() -> RateLimiter:
    """The process-wide limiter on the process-wide Redis connection."""
    global _limiter
    redis = get_redis()
    if _limiter is None or _limiter.redis is not redis:
        _limiter = RateLimiter(redis)
    return _limiter
