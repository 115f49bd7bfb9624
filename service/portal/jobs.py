"""The jobs pages: the list (filters, cursor paging; live.py keeps it live), one job (priority,
deadline, timeline, download, cancel, retry from the dead letter, delete, trace)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from service.db import tenant_session_scope
from service.errors import ClaimcheckError, ValidationError
from service.ids import first_id_at, has_prefix
from service.jobs.models import TERMINAL_STATUSES, Job, JobStatus
from service.jobs.remediation import remediation
from service.jobs.service import (
    at_risk,
    cancel_job,
    delete_job,
    download_url,
    estimated_completion,
    find_job,
    job_events,
    known_kinds,
    list_jobs,
    retry_job,
)
from service.models import utcnow
from service.portal.live import LIVE_STATUSES
from service.portal.web import PageNotFound, Viewer, failed, is_htmx, render, see_other, signed_in
from service.settings import get_settings

router = APIRouter()

PAGE_SIZE = 25


def _status_filter(status: str) -> list[JobStatus]:
    if not status:
        return []
    try:
        return [JobStatus(status)]
    except ValueError:
        raise ValidationError(f"unknown status {status!r}", field=["status"]) from None


@router.get("/jobs", include_in_schema=False)
def jobs_page(
    request: Request,
    viewer: Annotated[Viewer, Depends(signed_in)],
    status: str = "",
    kind: str = "",
    after: str = "",
) -> HTMLResponse:
    """The tenant's jobs, newest first; filters and paging work as plain links, and htmx swaps only the
    results when a filter changes."""
    filters = {"status": status, "kind": kind}
    template = "jobs_results.html" if is_htmx(request) else "jobs.html"
    rendered_at = first_id_at("job", utcnow())  # jobs made from now on arrive live (live.py)
    try:
        if after and not has_prefix(after, "job"):
            raise ValidationError("after is not a job id", field=["after"])
        with tenant_session_scope(viewer.tenant_id) as session:
            rows, more = list_jobs(
                session,
                viewer.tenant_id,
                first=PAGE_SIZE,
                after_id=after or None,
                statuses=_status_filter(status),
                kind=kind or None,
            )
    except ClaimcheckError as error:
        return failed(request, viewer, template, error, _list_context([], False, filters, after, ""))
    return render(request, viewer, template, _list_context(rows, more, filters, after, rendered_at))


def _list_context(
    rows: list[Job], more: bool, filters: Mapping[str, str], after: str, rendered_at: str
) -> dict[str, object]:
    return {
        "rendered_at": rendered_at,
        "section": "jobs",
        "jobs": rows,
        "more": more,
        "filters": filters,
        "after": after,
        "statuses": [status.value for status in JobStatus],
        "kinds": known_kinds(),
        "live_statuses": LIVE_STATUSES,
    }


def _job_or_404(viewer: Viewer, job_id: str) -> Job:
    with tenant_session_scope(viewer.tenant_id) as session:
        job = find_job(session, viewer.tenant_id, job_id)
    if job is None:
        raise PageNotFound
    return job


def trace_id(job: Job) -> str | None:
    """The trace id from the job's stored W3C traceparent (00-<trace id>-<span id>-<flags>)."""
    parts = (job.trace_context or {}).get("traceparent", "").split("-")
    if len(parts) == 4 and len(parts[1]) == 32 and parts[1] != "0" * 32:
        return parts[1]
    return None


def _job_context(viewer: Viewer, job_id: str) -> dict[str, object]:
    with tenant_session_scope(viewer.tenant_id) as session:
        job = find_job(session, viewer.tenant_id, job_id)
        if job is None:
            raise PageNotFound
        (events,) = job_events(session, viewer.tenant_id, [job.id])
    trace = trace_id(job)
    template = get_settings().trace_url_template
    return {
        "section": "jobs",
        "job": job,
        "events": events,
        "estimate": estimated_completion(job, utcnow()),
        "at_risk": at_risk(job, utcnow()),
        "remediation": remediation(job.error_code) if job.error_code else None,
        "trace_id": trace,
        "trace_url": template.replace("{trace_id}", trace) if trace and template else None,
        "live": job.status in LIVE_STATUSES,
        "can_cancel": job.status in ("QUEUED", "RUNNING"),
        "can_delete": job.status in TERMINAL_STATUSES,
        "can_retry": job.dead_lettered_at is not None,
        "has_file": job.status == JobStatus.SUCCEEDED and job.artifact_key is not None,
    }


@router.get("/jobs/{job_id}", include_in_schema=False)
def job_page(request: Request, viewer: Annotated[Viewer, Depends(signed_in)], job_id: str) -> HTMLResponse:
    return render(request, viewer, "job.html", _job_context(viewer, job_id))


@router.get("/jobs/{job_id}/download", include_in_schema=False)
def download(viewer: Annotated[Viewer, Depends(signed_in)], job_id: str) -> Response:
    """A fresh signed URL for the file, signed now (a page left open an hour still downloads)."""
    job = _job_or_404(viewer, job_id)
    if job.status != JobStatus.SUCCEEDED or job.artifact_key is None:
        raise PageNotFound
    url = download_url(job, get_settings().download_url_default_expiry)
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


@router.post("/jobs/{job_id}/cancel", include_in_schema=False)
def cancel(request: Request, viewer: Annotated[Viewer, Depends(signed_in)], job_id: str) -> Response:
    try:
        with tenant_session_scope(viewer.tenant_id) as session:
            cancel_job(session, viewer.tenant_id, job_id)
    except ClaimcheckError as error:
        if error.code == "NOT_FOUND":
            raise PageNotFound from error
        return failed(request, viewer, "job.html", error, _job_context(viewer, job_id))
    return see_other(f"/portal/jobs/{job_id}", "canceled")


@router.post("/jobs/{job_id}/retry", include_in_schema=False)
def retry(request: Request, viewer: Annotated[Viewer, Depends(signed_in)], job_id: str) -> Response:
    try:
        with tenant_session_scope(viewer.tenant_id) as session:
            retry_job(session, viewer.tenant_id, job_id)
    except ClaimcheckError as error:
        if error.code == "NOT_FOUND":
            raise PageNotFound from error
        return failed(request, viewer, "job.html", error, _job_context(viewer, job_id))
    return see_other(f"/portal/jobs/{job_id}", "requeued")


@router.post("/jobs/{job_id}/delete", include_in_schema=False)
def delete(request: Request, viewer: Annotated[Viewer, Depends(signed_in)], job_id: str) -> Response:
    try:
        with tenant_session_scope(viewer.tenant_id) as session:
            delete_job(session, viewer.tenant_id, job_id)
    except ClaimcheckError as error:
        if error.code == "NOT_FOUND":
            raise PageNotFound from error
        return failed(request, viewer, "job.html", error, _job_context(viewer, job_id))
    return see_other("/portal/jobs", "deleted")
