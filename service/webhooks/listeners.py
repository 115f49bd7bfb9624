"""Which tenants have a `webhooks listen` session open: while one does, every event of the tenant is
recorded, even one that no endpoint wants, so the webhookEvents subscription can stream it.

A listener marks its tenant in Redis with an expiry and renews the mark while it streams; the mark
outlives a dropped connection by LISTENER_TTL_SECONDS, so a listener that reconnects with `after`
finds every event of the gap recorded.
"""

from __future__ import annotations

import logging

from redis.client import Pipeline
from redis.exceptions import RedisError

from service.redis import get_redis

log = logging.getLogger(__name__)

PREFIX = "claimcheck:webhook-listeners:"
LISTENER_TTL_SECONDS = 300
RENEW_SECONDS = 30.0


def mark_listening(tenant_id: str) -> None:
    """Record events of this tenant for the next LISTENER_TTL_SECONDS."""
    get_redis().set(PREFIX + tenant_id, "1", ex=LISTENER_TTL_SECONDS)


def ask_listening(pipeline: Pipeline, tenant_id: str) -> None:
    """Queue is_listening()'s question on a pipeline (its answer: 1 when a listener streams)."""
    pipeline.exists(PREFIX + tenant_id)


def is_listening(tenant_id: str) -> bool:
    """Whether a listener of this tenant's is (or was lately) streaming; False when Redis is away (the
    listener misses events only while Redis and its own connection are both down)."""
    try:
        return bool(get_redis().exists(PREFIX + tenant_id))
    except RedisError as error:
        log.warning("could not check for webhook listeners of tenant %s: %s", tenant_id, error)
        return False
