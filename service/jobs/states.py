"""The job state machine: which transitions are legal and which event each one records."""

from __future__ import annotations

from service.errors import InvalidStateError
from service.jobs.models import JobStatus

S = JobStatus

TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    S.QUEUED: frozenset({S.RUNNING, S.CANCELED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELING, S.QUEUED}),
    S.CANCELING: frozenset({S.CANCELED, S.SUCCEEDED, S.FAILED}),
    S.SUCCEEDED: frozenset({S.EXPIRED}),
    S.FAILED: frozenset(),
    S.CANCELED: frozenset(),
    S.EXPIRED: frozenset(),
}
"""RUNNING → QUEUED is a retry (a transient error, or a worker lost mid-job). A job being canceled
may still finish on its own before the handler notices, so CANCELING → SUCCEEDED | FAILED is legal."""

EVENT_TYPES: dict[JobStatus, str] = {
    S.QUEUED: "job.queued",
    S.RUNNING: "job.started",
    S.SUCCEEDED: "job.succeeded",
    S.FAILED: "job.failed",
    S.CANCELING: "job.canceling",
    S.CANCELED: "job.canceled",
    S.EXPIRED: "job.expired",
}


def check_transition(current: JobStatus, target: JobStatus) -> None:
    """Raise InvalidStateError unless current → target is a legal transition."""
    if target not in TRANSITIONS[current]:
        raise InvalidStateError(f"a {current.value} job cannot become {target.value}")
