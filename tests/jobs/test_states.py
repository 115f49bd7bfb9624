"""The state machine: every legal transition works, every other one is refused and changes nothing."""

from __future__ import annotations

import itertools

import pytest
from sqlmodel import Session, select

from service.errors import InvalidStateError
from service.jobs import service
from service.jobs.models import Job, JobEvent, JobStatus
from service.jobs.states import TRANSITIONS, check_transition
from service.tenants.models import Tenant

S = JobStatus
LEGAL = {
    (S.QUEUED, S.RUNNING), (S.QUEUED, S.CANCELED),
    (S.QUEUED, S.FAILED),  # its deadline passed before it started
    (S.RUNNING, S.SUCCEEDED), (S.RUNNING, S.FAILED), (S.RUNNING, S.CANCELING), (S.RUNNING, S.QUEUED),
    (S.CANCELING, S.CANCELED), (S.CANCELING, S.SUCCEEDED), (S.CANCELING, S.FAILED),
    (S.SUCCEEDED, S.EXPIRED),  # retention deleted the file; the row stays a while longer
    (S.FAILED, S.QUEUED),  # requeued from the dead letter
}  # fmt: skip


def test_the_transition_table_is_the_designed_one() -> None:
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == LEGAL


@pytest.mark.parametrize(("current", "target"), sorted(itertools.product(S, S)))
def test_check_transition(current: JobStatus, target: JobStatus) -> None:
    if (current, target) in LEGAL:
        check_transition(current, target)
    else:
        with pytest.raises(InvalidStateError):
            check_transition(current, target)


def _job(db: Session, status: JobStatus) -> Job:
    tenant = Tenant(name="states")
    db.add(tenant)
    db.flush()
    job = Job(tenant_id=tenant.id, kind="speech", input={"text": "x"}, input_hash="0" * 64, status=status)
    db.add(job)
    db.flush()
    return job


def _events(db: Session, job: Job) -> list[str]:
    return list(db.exec(select(JobEvent.type).where(JobEvent.job_id == job.id)))


def test_transition_records_the_event_and_times(db: Session) -> None:
    job = _job(db, S.QUEUED)
    service.transition(db, job, S.RUNNING)
    assert job.attempt == 1
    assert job.started_at is not None
    assert job.finished_at is None
    service.transition(db, job, S.SUCCEEDED)
    assert job.progress == 1.0
    assert job.finished_at is not None
    assert _events(db, job) == ["job.started", "job.succeeded"]


@pytest.mark.parametrize("terminal", [S.SUCCEEDED, S.FAILED, S.CANCELED, S.EXPIRED])
def test_terminal_jobs_refuse_every_transition(db: Session, terminal: JobStatus) -> None:
    job = _job(db, terminal)
    for target in S:
        if (terminal, target) in LEGAL:
            continue
        with pytest.raises(InvalidStateError):
            service.transition(db, job, target)
    db.refresh(job)
    assert job.status == terminal
    assert _events(db, job) == []


def test_progress_never_goes_backwards_and_records_each_milestone_once(db: Session) -> None:
    job = _job(db, S.RUNNING)
    service.report_progress(db, job, 0.6, "halfway")
    service.report_progress(db, job, 0.3, None)
    service.report_progress(db, job, 0.8, None)
    assert job.progress == 0.8
    assert job.message == "halfway"
    progress_events = db.exec(
        select(JobEvent).where(JobEvent.job_id == job.id, JobEvent.type == "job.progress")
    )
    assert [event.data["progress"] for event in progress_events if event.data] == [0.25, 0.5, 0.75]
