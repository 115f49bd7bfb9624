"""Open subscriptions per tenant, counted in Redis across every API process.

Each API process counts its own open subscriptions per tenant and publishes the count as its field
(a random process id) in the tenant's hash `claimcheck:subscriptions:<tenant>`; its writes go one at
a time, so the count Redis holds is the process's current one. A field counts while
the process's lease key `claimcheck:subscriptions:alive:<process>` lives: a heartbeat renews it every
third of SUBSCRIPTION_LEASE_SECONDS and rewrites the process's counts (so a Redis that lost them gets
them back). A process that dies stops renewing; once its lease expires, the next place taken for that
tenant drops its field. Taking a place is one Lua script: sum the live processes' counts with this one's
new count, drop the dead ones' fields, and write the new count if the sum is within the cap. Places
given back are written together: the counts of every tenant that gave some back since the last write,
in one round trip (the thousand subscribers of a job that ends give theirs back at once; written one
by one, in turn, they held up every place taken meanwhile).

While Redis is unreachable a process counts only its own subscriptions against the cap: a Redis
outage must not end live updates, and the heartbeat publishes the counts again once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import redis.asyncio
from redis.exceptions import RedisError

from service.errors import QuotaExceededError
from service.redis import new_async_redis
from service.settings import get_settings

log = logging.getLogger(__name__)

PREFIX = "claimcheck:subscriptions:"
ALIVE_PREFIX = PREFIX + "alive:"

# KEYS[1] the tenant's hash. ARGV: this process, the cap, the lease prefix, the lease in ms, this
# process's count with the new place.
_TAKE = """
local counts = redis.call('HGETALL', KEYS[1])
local total = tonumber(ARGV[5])
for i = 1, #counts, 2 do
  local process = counts[i]
  if process ~= ARGV[1] then
    if redis.call('EXISTS', ARGV[3] .. process) == 1 then
      total = total + tonumber(counts[i + 1])
    else
      redis.call('HDEL', KEYS[1], process)
    end
  end
end
if total > tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[5])
redis.call('SET', ARGV[3] .. ARGV[1], '1', 'PX', ARGV[4])
return 1
"""


class SubscriptionCaps:
    """This process's share of each tenant's open subscriptions, published in Redis under a lease."""

    def __init__(self, client: redis.asyncio.Redis, lease_seconds: float) -> None:
        self.process_id = uuid.uuid4().hex
        self._redis = client
        self._lease_ms = max(int(lease_seconds * 1000), 1)
        self._open: Counter[str] = Counter()
        self._heartbeat: asyncio.Task[None] | None = None
        self._writing = asyncio.Lock()
        """This process's writes reach Redis one at a time, so the last count written is the current one."""
        self._published: set[str] = set()
        self._given_back: set[str] = set()
        """Tenants whose count went down since it was last written."""
        self._writing_back: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def place(self, tenant_id: str) -> AsyncIterator[None]:
        """Hold one of the tenant's places while the block runs; QUOTA_EXCEEDED when all are taken."""
        cap = get_settings().max_subscriptions_per_tenant
        async with self._writing:
            await self._take(tenant_id, cap)
            self._open[tenant_id] += 1
            self._published.add(tenant_id)
        self._keep_alive()
        try:
            yield
        finally:
            self._give_back(tenant_id)

    async def _take(self, tenant_id: str, cap: int) -> None:
        count = self._open[tenant_id] + 1
        try:
            taken = await self._redis.eval(
                _TAKE, 1, PREFIX + tenant_id, self.process_id, cap, ALIVE_PREFIX, self._lease_ms, count
            )
        except (RedisError, OSError) as error:
            log.warning("subscription caps: Redis unreachable (%s); counting this process only", error)
            taken = count <= cap
        if not taken:
            raise QuotaExceededError("too many open subscriptions for this tenant")

    def _give_back(self, tenant_id: str) -> None:
        self._open[tenant_id] -= 1
        if not self._open[tenant_id]:
            del self._open[tenant_id]
        self._given_back.add(tenant_id)
        if self._writing_back is None or self._writing_back.done():
            self._writing_back = asyncio.create_task(self._write_back())

    async def _write_back(self) -> None:
        """Write the current count of every tenant that gave places back, all in one round trip (and
        again for those given back meanwhile). Should Redis miss it, the heartbeat writes them."""
        async with self._writing:
            while self._given_back:
                tenants, self._given_back = self._given_back, set()
                try:
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for tenant_id in tenants:
                            count = self._open.get(tenant_id, 0)
                            if count:
                                pipe.hset(PREFIX + tenant_id, self.process_id, count)
                            else:
                                pipe.hdel(PREFIX + tenant_id, self.process_id)
                        await pipe.execute()
                except (RedisError, OSError) as error:
                    log.warning("subscription caps: could not give places back (%s)", error)

    def _keep_alive(self) -> None:
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.create_task(self._beat())

    async def _beat(self) -> None:
        """Renew the lease and republish the counts while this process holds any place."""
        period = self._lease_ms / 3000
        while self._open:
            try:
                async with self._writing:
                    open_now = dict(self._open)
                    async with self._redis.pipeline(transaction=False) as pipe:
                        pipe.set(ALIVE_PREFIX + self.process_id, "1", px=self._lease_ms)
                        for tenant_id, count in open_now.items():
                            pipe.hset(PREFIX + tenant_id, self.process_id, count)
                        for tenant_id in self._published - open_now.keys():  # a give-back Redis missed
                            pipe.hdel(PREFIX + tenant_id, self.process_id)
                        await pipe.execute()
                    self._published = set(open_now)
            except (RedisError, OSError) as error:
                log.warning("subscription caps: could not renew the lease (%s)", error)
            await asyncio.sleep(period)


_caps: dict[asyncio.AbstractEventLoop, SubscriptionCaps] = {}


def subscription_caps() -> SubscriptionCaps:
    """The caps of the running event loop (one per API process)."""
    loop = asyncio.get_running_loop()
    if loop not in _caps:
        settings = get_settings()
        # REDIS_URL, or the master the Sentinels name (as for RQ, rate limits and the job feed)
        _caps[loop] = SubscriptionCaps(new_async_redis(socket_timeout=2), settings.subscription_lease_seconds)
    return _caps[loop]
