"""The count of each tenant's QUEUED jobs that the quota reads is kept by a trigger (migration 0014):
it equals the QUEUED rows across creation, start, retry, cancel, dead letter, requeue and delete,
under row-level security too, and a rolled-back savepoint takes its job's count with it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import text
from sqlmodel import Session, col, func, select

from service.db import AFTER_COMMIT, session_scope, tenant_session_scope
from service.errors import QuotaExceededError
from service.jobs import repository
from service.jobs.models import Job, JobStatus
from service.jobs.service import cancel, create_job, delete, fail, requeue, retry_later, transition
from tests.conftest import TenantHandle
from tests.tenants.support import set_limits

SLOW = {"seconds": 1}


def _counted(tenant_id: str) -> int:
    with session_scope() as session:
        counted = session.execute(
            text("SELECT coalesce(sum(queued), 0) FROM job_queue_counts WHERE tenant_id = :t"),
            {"t": tenant_id},
        ).scalar_one()
    return int(counted)


def _queued(tenant_id: str) -> int:
    with session_scope() as session:
        statement = select(func.count()).where(Job.tenant_id == tenant_id, Job.status == JobStatus.QUEUED)
        return int(session.exec(statement).one())


def _create(session: Session, tenant_id: str) -> str:
    job_id = create_job(session, tenant_id, "test-slow", SLOW, None).id
    session.info.pop(AFTER_COMMIT, None)  # no worker takes it
    return job_id


def _change(job_id: str, change: Callable[[Session, Job], None]) -> None:
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        change(session, job)
        session.info.pop(AFTER_COMMIT, None)


def _start(session: Session, job: Job) -> None:
    """As a worker starts a job: out of the outbox, RUNNING."""
    repository.remove_from_outbox(session, job.id)
    transition(session, job, JobStatus.RUNNING)


def _assert_counted(tenant_id: str, expected: int) -> None:
    assert (_counted(tenant_id), _queued(tenant_id)) == (expected, expected)


def test_the_count_follows_every_change_of_status(tenant: TenantHandle) -> None:
    with session_scope() as session:
        first, second, third = (_create(session, tenant.id) for _ in range(3))
    _assert_counted(tenant.id, 3)
    _change(first, _start)
    _change(second, cancel)
    _assert_counted(tenant.id, 1)
    _change(first, lambda session, job: retry_later(session, job, code="X", message="again", delay=1))
    _assert_counted(tenant.id, 2)
    _change(first, _start)
    _change(first, lambda session, job: fail(session, job, code="X", message="no", retryable=False))
    _change(second, delete)  # a finished job: not counted before, nothing changes
    _assert_counted(tenant.id, 1)
    _change(first, lambda session, job: requeue(session, job, by="tenant"))
    _assert_counted(tenant.id, 2)
    _change(third, lambda session, job: session.delete(job))  # a QUEUED row removed
    _assert_counted(tenant.id, 1)


def test_a_rolled_back_savepoint_takes_its_count(tenant: TenantHandle) -> None:
    with session_scope() as session:
        _create(session, tenant.id)
        savepoint = session.begin_nested()
        _create(session, tenant.id)
        savepoint.rollback()
    _assert_counted(tenant.id, 1)


def test_tenant_requests_count_under_row_level_security(
    tenant: TenantHandle, make_tenant: Callable[..., TenantHandle]
) -> None:
    other = make_tenant("other")
    with session_scope() as session:
        _create(session, other.id)
    with tenant_session_scope(tenant.id) as session:
        job_ids = [_create(session, tenant.id) for _ in range(2)]
        seen = session.execute(text("SELECT DISTINCT tenant_id FROM job_queue_counts")).scalars().all()
    assert seen == [tenant.id]  # another tenant's counts are hidden
    with tenant_session_scope(tenant.id) as session:
        job = session.exec(select(Job).where(col(Job.id) == job_ids[0])).one()
        cancel(session, job)
        session.info.pop(AFTER_COMMIT, None)
    _assert_counted(tenant.id, 1)
    _assert_counted(other.id, 1)


def test_the_quota_refuses_at_max_queued_until_one_starts(tenant: TenantHandle) -> None:
    set_limits(tenant.id, max_queued=2)
    with session_scope() as session:
        job_ids = [_create(session, tenant.id) for _ in range(2)]
    with session_scope() as session, pytest.raises(QuotaExceededError):
        _create(session, tenant.id)
    _change(job_ids[0], _start)
    with session_scope() as session:
        _create(session, tenant.id)
    _assert_counted(tenant.id, 2)


def test_a_deleted_tenant_takes_its_counts(make_tenant: Callable[..., TenantHandle]) -> None:
    doomed = make_tenant("doomed")
    with session_scope() as session:
        _create(session, doomed.id)
    with session_scope() as session:
        session.execute(text("DELETE FROM tenants WHERE id = :t"), {"t": doomed.id})
    _assert_counted(doomed.id, 0)
