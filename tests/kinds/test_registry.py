"""Custom kinds plug into the registry and run through the real runner (in this process, on real Postgres
and storage); what they end as is read back through the real API, as a tenant would see it."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, Field

from service.errors import ValidationError
from service.jobs import kinds as registry
from service.jobs.kinds import ArtifactOutput, Handler, JobContext, JobFailure, Kind
from service.jobs.runner import run_job
from tests.conftest import JOB_QUERY, GraphQLClient, TenantHandle, commit_job_without_enqueue

RegisterKind = Callable[..., Kind]


class EchoInput(BaseModel):
    text: str = Field(min_length=1)
    repeat: int = Field(default=1, ge=1, le=10_000)


@pytest.fixture
def register_kind() -> Iterator[RegisterKind]:
    """Register kinds for one test; the registry is as it was afterwards."""
    registry.load_builtin_kinds()
    before = dict(registry._KINDS)

    def register(
        name: str, handler: Handler, content_type: str = "text/plain", max_attempts: int = 1
    ) -> Kind:
        kind = Kind(
            name=name,
            input_model=EchoInput,
            handler=handler,
            content_type=content_type,
            max_attempts=max_attempts,
        )
        return registry.register(kind)

    yield register
    registry._KINDS.clear()
    registry._KINDS.update(before)


def _run(tenant: TenantHandle, kind: str, raw_input: dict[str, Any]) -> str:
    """Commit a job of this kind (kept out of RQ, so only this process runs it) and run it here."""
    job_id = commit_job_without_enqueue(tenant.id, kind, raw_input)
    run_job(job_id)
    return job_id


def echo(ctx: JobContext, params: EchoInput) -> ArtifactOutput:
    ctx.progress(0.5, "echoing")

    def chunks() -> Iterator[bytes]:
        for _ in range(params.repeat):
            yield params.text.encode()

    return ArtifactOutput(filename="echo.txt", content_type="text/plain", chunks=chunks())


def test_a_custom_kind_runs_through_the_runner_and_its_artifact_downloads(
    register_kind: RegisterKind, gql: GraphQLClient, tenant: TenantHandle
) -> None:
    register_kind("test-echo", echo)
    assert "test-echo" in registry.kind_names()

    job_id = _run(tenant, "test-echo", {"text": "ab", "repeat": 3})

    job = gql(JOB_QUERY, {"id": job_id})["job"]
    assert job["kind"] == "test-echo"
    assert job["status"] == "SUCCEEDED"
    assert job["progress"] == 1.0
    assert job["attempt"] == 1
    assert job["error"] is None
    artifact = job["artifact"]
    assert artifact["filename"] == "echo.txt"
    assert artifact["contentType"] == "text/plain"
    assert artifact["byteSize"] == 6
    assert artifact["sha256"] == hashlib.sha256(b"ababab").hexdigest()
    response = httpx.get(artifact["downloadUrl"])
    assert response.status_code == 200
    assert response.content == b"ababab"
    assert 'filename="echo.txt"' in response.headers["content-disposition"]

    types = [event["type"] for event in job["events"]]
    assert types == ["job.queued", "job.started", "job.progress", "job.progress", "job.succeeded"]
    assert [e["data"]["progress"] for e in job["events"] if e["type"] == "job.progress"] == [0.25, 0.5]


def test_a_kind_that_produces_no_file_succeeds_without_an_artifact(
    register_kind: RegisterKind, gql: GraphQLClient, tenant: TenantHandle
) -> None:
    register_kind("test-nofile", lambda ctx, params: None)
    job = gql(JOB_QUERY, {"id": _run(tenant, "test-nofile", {"text": "x"})})["job"]
    assert job["status"] == "SUCCEEDED"
    assert job["artifact"] is None


def test_a_job_failure_ends_failed_with_its_code_and_not_retryable(
    register_kind: RegisterKind, gql: GraphQLClient, tenant: TenantHandle
) -> None:
    def refuse(ctx: JobContext, params: EchoInput) -> ArtifactOutput:
        raise JobFailure("SOMETHING", "msg")

    register_kind("test-refuse", refuse)
    job = gql(JOB_QUERY, {"id": _run(tenant, "test-refuse", {"text": "x"})})["job"]
    assert job["status"] == "FAILED"
    assert job["finishedAt"] is not None
    assert job["error"] == {"code": "SOMETHING", "message": "msg", "retryable": False}
    assert job["artifact"] is None
    assert job["events"][-1]["type"] == "job.failed"
    assert job["events"][-1]["data"] == {"code": "SOMETHING", "retryable": False}


def test_a_failure_while_streaming_the_artifact_fails_the_job_and_stores_nothing(
    register_kind: RegisterKind, gql: GraphQLClient, tenant: TenantHandle, env: dict[str, str]
) -> None:
    def half(ctx: JobContext, params: EchoInput) -> ArtifactOutput:
        def chunks() -> Iterator[bytes]:
            yield b"first half"
            raise JobFailure("SOURCE_GONE", "the source went away", retryable=True)

        return ArtifactOutput(filename="half.txt", content_type="text/plain", chunks=chunks())

    register_kind("test-half", half)
    job_id = _run(tenant, "test-half", {"text": "x"})
    job = gql(JOB_QUERY, {"id": job_id})["job"]
    assert job["status"] == "FAILED"
    assert job["artifact"] is None
    assert job["error"] == {"code": "SOURCE_GONE", "message": "the source went away", "retryable": True}

    job_dir = Path(env["STORAGE_DIR"]) / "tenants" / tenant.id / "jobs" / job_id
    assert not job_dir.exists() or list(job_dir.iterdir()) == []


def test_an_unexpected_exception_ends_failed_with_a_generic_error(
    register_kind: RegisterKind, gql: GraphQLClient, tenant: TenantHandle
) -> None:
    def crash(ctx: JobContext, params: EchoInput) -> ArtifactOutput:
        raise RuntimeError("password=hunter2 at /srv/internal/secret.py")

    register_kind("test-crash", crash)
    job = gql(JOB_QUERY, {"id": _run(tenant, "test-crash", {"text": "x"})})["job"]
    assert job["status"] == "FAILED"
    error = job["error"]
    assert error["code"] == "INTERNAL"
    assert error["message"] == "the job failed unexpectedly"
    for leak in ("hunter2", "secret.py", "RuntimeError", "Traceback", "File "):
        assert leak not in str(job), leak


def test_custom_kind_input_is_validated_by_its_model(
    register_kind: RegisterKind, tenant: TenantHandle
) -> None:
    register_kind("test-echo", echo)
    with pytest.raises(ValidationError) as raised:
        commit_job_without_enqueue(tenant.id, "test-echo", {"text": "x", "repeat": 0})
    assert raised.value.field == ["input", "repeat"]


def test_two_different_kinds_under_one_name_are_refused(register_kind: RegisterKind) -> None:
    first = register_kind("test-dup", echo)
    assert registry.register(first) is first  # the same kind again (a module imported twice) is fine
    with pytest.raises(ValueError, match="'test-dup' is already registered"):
        register_kind("test-dup", lambda ctx, params: None)
    with pytest.raises(ValueError, match="'speech' is already registered"):
        register_kind("speech", echo)
    assert registry.get_kind("test-dup") is first
    assert registry.get_kind("speech").content_type == "audio/wav"


def test_built_in_kinds_are_found_after_a_custom_kind_registered_first() -> None:
    program = (
        "from pydantic import BaseModel\n"
        "from service.jobs.kinds import Kind, get_kind, register\n"
        "class Input(BaseModel):\n    text: str\n"
        "register(Kind(name='plugin', input_model=Input, handler=lambda c, p: None, content_type='x/y'))\n"
        "print(get_kind('speech').name)\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "speech", result.stderr


def test_a_job_of_a_kind_this_worker_does_not_know_fails_instead_of_staying_running(
    register_kind: RegisterKind, gql: GraphQLClient, tenant: TenantHandle
) -> None:
    register_kind("test-vanishing", echo)
    job_id = commit_job_without_enqueue(tenant.id, "test-vanishing", {"text": "x"})
    del registry._KINDS["test-vanishing"]  # a worker deployed without this kind

    run_job(job_id)

    job = gql(JOB_QUERY, {"id": job_id})["job"]
    assert job["status"] == "FAILED"
    assert job["error"]["code"] == "UNKNOWN_KIND"
    assert job["error"]["retryable"] is True


def test_a_transient_failure_is_retried_with_backoff_and_each_attempt_is_recorded(
    register_kind: RegisterKind, gql: GraphQLClient, tenant: TenantHandle
) -> None:
    def flaky(ctx: JobContext, params: EchoInput) -> ArtifactOutput:
        if ctx.attempt == 1:
            raise JobFailure("UPSTREAM_503", "the upstream answered 503", retryable=True)
        return echo(ctx, params)

    register_kind("test-flaky", flaky, max_attempts=3)
    job_id = _run(tenant, "test-flaky", {"text": "ok"})
    waiting = gql(JOB_QUERY, {"id": job_id})["job"]
    assert waiting["status"] == "QUEUED"
    assert waiting["attempt"] == 1
    assert waiting["error"] is None
    retry_event = waiting["events"][-1]
    assert retry_event["type"] == "job.queued"
    assert retry_event["data"]["code"] == "UPSTREAM_503"
    assert retry_event["data"]["retryInSeconds"] > 0

    run_job(job_id)  # what the sweep's re-enqueue leads to once the backoff has passed
    job = gql(JOB_QUERY, {"id": job_id})["job"]
    assert job["status"] == "SUCCEEDED"
    assert job["attempt"] == 2
    assert [e["type"] for e in job["events"]].count("job.started") == 2


def test_a_permanent_failure_fails_at_once_even_with_attempts_left(
    register_kind: RegisterKind, gql: GraphQLClient, tenant: TenantHandle
) -> None:
    def broken(ctx: JobContext, params: EchoInput) -> ArtifactOutput:
        raise JobFailure("BAD_INPUT", "cannot work with this", retryable=False)

    register_kind("test-broken", broken, max_attempts=5)
    job = gql(JOB_QUERY, {"id": _run(tenant, "test-broken", {"text": "x"})})["job"]
    assert job["status"] == "FAILED"
    assert job["attempt"] == 1
    assert job["error"] == {"code": "BAD_INPUT", "message": "cannot work with this", "retryable": False}


def test_transient_failures_stop_after_the_kinds_last_attempt(
    register_kind: RegisterKind, gql: GraphQLClient, tenant: TenantHandle
) -> None:
    def always(ctx: JobContext, params: EchoInput) -> ArtifactOutput:
        raise JobFailure("UPSTREAM_503", "still down", retryable=True)

    register_kind("test-down", always, max_attempts=2)
    job_id = _run(tenant, "test-down", {"text": "x"})
    run_job(job_id)
    job = gql(JOB_QUERY, {"id": job_id})["job"]
    assert job["status"] == "FAILED"
    assert job["attempt"] == 2
    assert job["error"] == {"code": "UPSTREAM_503", "message": "still down", "retryable": True}
