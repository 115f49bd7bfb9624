"""Job priorities and the RQ queue each one is taken from (imports nothing of ours).

Workers take HIGH before NORMAL before LOW; every STARVATION_EVERY-th take of a work horse looks at
the queues lowest first, so LOW still moves under a steady HIGH load.
"""

from __future__ import annotations

import enum

JOBS = "jobs"
"""What `claimcheck worker --queues` calls the job queues: all three priorities."""


class JobPriority(enum.StrEnum):
    HIGH = "HIGH"
    NORMAL = "NORMAL"
    LOW = "LOW"


RANKS = {JobPriority.LOW: 0, JobPriority.NORMAL: 1, JobPriority.HIGH: 2}
"""A plan's max_priority limit is one of these ranks (2: HIGH allowed, 1: up to NORMAL, 0: LOW only)."""

QUEUES = {JobPriority.HIGH: "jobs-high", JobPriority.NORMAL: JOBS, JobPriority.LOW: "jobs-low"}
"""NORMAL keeps the queue's historical name, so jobs enqueued before priorities existed still run."""

ORDERED_QUEUES = tuple(QUEUES[priority] for priority in JobPriority)
"""Strict order: highest first."""


def queue_for(priority: str) -> str:
    """The RQ queue of a priority (NORMAL for anything unknown)."""
    try:
        return QUEUES[JobPriority(priority)]
    except ValueError:
        return JOBS


def expand_queues(names: list[str]) -> list[str]:
    """Worker queue names with `jobs` meaning the three priority queues, highest first."""
    expanded: list[str] = []
    for name in names:
        expanded.extend(ORDERED_QUEUES if name == JOBS else (name,))
    return list(dict.fromkeys(expanded))


def highest_allowed(max_priority: int) -> JobPriority:
    """The highest priority a plan's max_priority rank allows."""
    return max((priority for priority, rank in RANKS.items() if rank <= max_priority), key=RANKS.__getitem__)
