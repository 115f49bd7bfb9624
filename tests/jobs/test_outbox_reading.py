"""What the scheduler's outbox gauges read: the oldest job ready to run, and the ready jobs RQ does not
hold (the outbox lag). Each test sees only its own jobs: it runs in a transaction that first empties the
outbox, and is rolled back."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete
from sqlmodel import Session

from service.jobs.dispatch import RUN_JOB, read_outbox
from service.jobs.models import JobOutbox
from service.jobs.repository import set_outbox_due
from service.jobs.service import create_job
from service.models import utcnow
from service.redis import get_queue
from tests.conftest import TenantHandle

# A queue no worker takes from: RQ holds the job there, and no worker runs it (it is never committed).
IDLE_QUEUE = "outbox-reading-test"


def _ready_job(db: Session, tenant: TenantHandle, ready_seconds_ago: float) -> str:
    """A QUEUED job (uncommitted: its enqueue never happens) ready since that long."""
    job = create_job(db, tenant.id, "test-slow", {"seconds": 0.1, "steps": 1}, None)
    set_outbox_due(db, job.id, utcnow() - timedelta(seconds=ready_seconds_ago))
    return job.id


def test_a_ready_job_rq_does_not_hold_is_the_outbox_lag_until_rq_holds_it(
    db: Session, tenant: TenantHandle
) -> None:
    db.execute(delete(JobOutbox))
    assert read_outbox(db).missing_from_queue == 0

    older = _ready_job(db, tenant, ready_seconds_ago=90)
    _ready_job(db, tenant, ready_seconds_ago=30)
    reading = read_outbox(db)
    assert reading.missing_from_queue == 2
    assert 90 <= reading.lag_seconds < 100
    assert 90 <= reading.oldest_queued_seconds < 100

    held = get_queue(IDLE_QUEUE).enqueue_call(RUN_JOB, args=(older,), job_id=older)
    try:
        reading = read_outbox(db)  # RQ holds the older one now: it waits, it is not lost
        assert reading.missing_from_queue == 1
        assert 30 <= reading.lag_seconds < 40
        assert 90 <= reading.oldest_queued_seconds < 100
    finally:
        held.delete()
    assert read_outbox(db).missing_from_queue == 2


def test_a_job_deferred_to_later_is_not_ready_and_an_empty_outbox_reads_zero(
    db: Session, tenant: TenantHandle
) -> None:
    db.execute(delete(JobOutbox))
    deferred = create_job(db, tenant.id, "test-slow", {"seconds": 0.1, "steps": 1}, None)
    set_outbox_due(db, deferred.id, utcnow() + timedelta(minutes=5))  # a retry's backoff, a busy tenant
    reading = read_outbox(db)
    assert (reading.oldest_queued_seconds, reading.lag_seconds, reading.missing_from_queue) == (0, 0, 0)
