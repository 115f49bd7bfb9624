"""When a failed delivery is tried again: the retry schedule, jitter and the receiver's Retry-After."""

from __future__ import annotations

import random
from email.utils import parsedate_to_datetime

from service.models import utcnow
from service.settings import Settings

MAX_SCHEDULE_STEPS = 20
MAX_SCHEDULE_STEP_SECONDS = 24 * 3600.0
MIN_TIMEOUT_SECONDS = 1.0
MAX_TIMEOUT_SECONDS = 60.0


def next_delay(
    failed_attempts: int,
    retry_after: float | None,
    settings: Settings,
    schedule: list[float] | None = None,
) -> float | None:
    """Seconds until the next attempt after `failed_attempts` failures, or None when the schedule (the
    endpoint's own, else WEBHOOK_RETRY_SCHEDULE) is done.

    The schedule's delay gets ±jitter; a Retry-After longer than it is honoured up to the configured
    bound, a shorter one never makes us retry sooner than the schedule.
    """
    schedule = schedule or settings.webhook_retry_schedule
    if failed_attempts >= len(schedule):
        return None
    delay = schedule[failed_attempts] * settings.webhook_retry_scale
    jitter = settings.webhook_retry_jitter
    delay *= random.uniform(1 - jitter, 1 + jitter)
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.webhook_max_retry_after) * settings.webhook_retry_scale)
    return delay


def parse_retry_after(value: str | None) -> float | None:
    """A Retry-After header (delay-seconds or an HTTP date) in seconds from now; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max((when - utcnow()).total_seconds(), 0.0)
