"""service.models.construct makes the row object `model(**values)` makes, without its attribute events."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import inspect
from sqlmodel import Session

from service.jobs.models import Job, JobStatus
from service.models import construct
from tests.conftest import TenantHandle


def _values(tenant_id: str) -> dict[str, Any]:
    return {
        "id": "job_x",
        "tenant_id": tenant_id,
        "kind": "speech",
        "input": {"text": "hi"},
        "input_hash": "h",
    }


def test_construct_matches_the_models_constructor() -> None:
    built, made = construct(Job, **_values("ten_a")), Job(**_values("ten_a"))
    state = inspect(built)
    assert state is not None
    assert state.transient
    assert built.model_dump(exclude={"created_at"}) == made.model_dump(exclude={"created_at"})
    assert (built.status, built.progress, built.attempt) == (JobStatus.QUEUED, 0.0, 0)
    assert built.model_fields_set == made.model_fields_set
    assert construct(Job, **_values("ten_a")).created_at is not built.created_at  # factories run per row


def test_construct_needs_the_required_fields() -> None:
    with pytest.raises(TypeError, match="input_hash"):
        construct(Job, id="job_x", tenant_id="ten_a", kind="speech", input={})


def test_a_constructed_row_is_inserted_and_read_back(db: Session, tenant: TenantHandle) -> None:
    job = construct(Job, **_values(tenant.id))
    db.add(job)
    db.flush()
    db.expire_all()
    read = db.get(Job, "job_x")
    assert read is not None
    assert (read.tenant_id, read.status, read.input, read.attempt) == (tenant.id, "QUEUED", {"text": "hi"}, 0)
