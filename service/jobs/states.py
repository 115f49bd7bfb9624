"""The job state machine: which transitions are legal and which event each one records."""

from __future__ import annotations

from service.errors import InvalidStateError
from service.jobs.models import JobStatus

TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELED, JobStatus.FAILED}),
    JobStatus.RUNNING: frozenset(
        {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELING, JobStatus.QUEUED}
    ),
    JobStatus.CANCELING: frozenset({JobStatus.CANCELED, JobStatus.SUCCEEDED, JobStatus.FAILED}),
    JobStatus.SUCCEEDED: frozenset({JobStatus.EXPIRED}),
    JobStatus.FAILED: frozenset({JobStatus.QUEUED}),
    JobStatus.CANCELED: frozenset(),
    JobStatus.EXPIRED: frozenset(),
}
"""RUNNING → QUEUED is a retry (a transient error, or a worker lost mid-job). A job being canceled
may still finish on its own before the handler notices, so CANCELING → SUCCEEDED | FAILED is legal.
QUEUED → FAILED is a deadline passed before the job started; FAILED → QUEUED a requeue from the dead
letter (same id, same audit trail)."""

STATUS_EVENTS: dict[JobStatus, str] = {
    JobStatus.QUEUED: "job.queued",
    JobStatus.RUNNING: "job.started",
    JobStatus.SUCCEEDED: "job.succeeded",
    JobStatus.FAILED: "job.failed",
    JobStatus.CANCELING: "job.canceling",
    JobStatus.CANCELED: "job.canceled",
    JobStatus.EXPIRED: "job.expired",
}
"""The audit-trail event each status is entered with (webhooks carry those tenants subscribe to)."""


def check_transition(current: JobStatus, target: JobStatus) -> None:
    """Raise InvalidStateError unless current → target is a legal transition."""
    if target not in TRANSITIONS[current]:
        raise InvalidStateError(f"a {current.value} job cannot become {target.value}")
