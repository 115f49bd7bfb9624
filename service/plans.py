"""Plan limits: their names, the built-in plans, and one tenant's effective values.

Imports nothing of ours: settings validate PLANS against these names, and tenants resolve them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

LIMIT_NAMES = (
    "mutations_per_minute",
    "burst",
    "max_running",
    "max_queued",
    "max_text_chars",
    "max_webhook_endpoints",
    "queries_per_minute",
    "query_burst",
    "max_priority",
)
QUERY_RATE_FACTOR = 10
"""A plan that names no query rate gets ten times its mutation rate and burst (0 stays unlimited), so
PLANS written before queries were limited keep working."""
DERIVED_LIMITS = {"queries_per_minute": "mutations_per_minute", "query_burst": "burst"}
DEFAULT_LIMITS = {"max_priority": 2}
"""Limits a plan may leave out, with their value then: PLANS written before priorities allow HIGH."""
REQUIRED_LIMITS = tuple(
    name for name in LIMIT_NAMES if name not in DERIVED_LIMITS and name not in DEFAULT_LIMITS
)

DEFAULT_PLANS: dict[str, dict[str, int]] = {
    "free": {
        "mutations_per_minute": 60,
        "burst": 20,
        "max_running": 2,
        "max_queued": 100,
        "max_text_chars": 5_000,
        "max_webhook_endpoints": 5,
        "queries_per_minute": 600,
        "query_burst": 200,
        "max_priority": 1,
    },
    "pro": {
        "mutations_per_minute": 600,
        "burst": 100,
        "max_running": 10,
        "max_queued": 10_000,
        "max_text_chars": 5_000,
        "max_webhook_endpoints": 50,
        "queries_per_minute": 6_000,
        "query_burst": 1_000,
        "max_priority": 2,
    },
}


@dataclass(frozen=True)
class Limits:
    """One tenant's effective limits (mutations_per_minute or queries_per_minute 0: no rate limit)."""

    mutations_per_minute: int
    burst: int
    max_running: int
    max_queued: int
    max_text_chars: int
    max_webhook_endpoints: int
    queries_per_minute: int
    query_burst: int
    max_priority: int = DEFAULT_LIMITS["max_priority"]
    """The highest job priority allowed: 2 HIGH, 1 NORMAL, 0 LOW (service/jobs/priority.py RANKS)."""


assert tuple(f.name for f in fields(Limits)) == LIMIT_NAMES


def missing_limits(plan: Mapping[str, int]) -> list[str]:
    """The limit names a plan from PLANS lacks (a derived one may be left out)."""
    return [name for name in REQUIRED_LIMITS if name not in plan]


def resolve_limits(
    plans: Mapping[str, Mapping[str, int]], default_plan: str, plan: str, overrides: Mapping[str, Any] | None
) -> Limits:
    """The plan's limits (the default plan's for an unknown name) with a tenant's overrides on top."""
    values = dict(plans.get(plan) or plans[default_plan])
    for name, source in DERIVED_LIMITS.items():
        values.setdefault(name, values[source] * QUERY_RATE_FACTOR)
    for name, default in DEFAULT_LIMITS.items():
        values.setdefault(name, default)
    for name, value in (overrides or {}).items():
        if name in LIMIT_NAMES and isinstance(value, int) and value >= 0:
            values[name] = value
    return Limits(**{name: int(values[name]) for name in LIMIT_NAMES})
