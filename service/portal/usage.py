"""The usage page: plan and limits, running and queued jobs against their caps, jobs per hour over the
last 7 days (a uPlot chart, with a table for screen readers and no-JavaScript browsers), storage used."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from service.db import tenant_session_scope
from service.jobs.service import count_by_status, jobs_per_hour, storage_used
from service.portal.web import Viewer, render, signed_in
from service.settings import get_settings
from service.tenants.service import get_tenant, limits_for
from service.webhooks.service import count_endpoints

router = APIRouter()

CHART_HOURS = 7 * 24


@router.get("/usage", include_in_schema=False)
def usage_page(request: Request, viewer: Annotated[Viewer, Depends(signed_in)]) -> HTMLResponse:
    tenant_id = viewer.tenant_id
    with tenant_session_scope(tenant_id) as session:
        plan = get_tenant(session, tenant_id).plan
        limits = limits_for(session, tenant_id)
        counts = count_by_status(session, tenant_id)
        hours = jobs_per_hour(session, tenant_id, CHART_HOURS)
        stored = storage_used(session, tenant_id)
        endpoints = count_endpoints(session, tenant_id)
    per_day: dict[date, int] = defaultdict(int)
    for hour, count in hours:
        per_day[hour.date()] += count
    chart = {"t": [int(hour.timestamp()) for hour, _ in hours], "jobs": [count for _, count in hours]}
    settings = get_settings()
    context = {
        "section": "usage",
        "plan": plan if plan in settings.plans else settings.default_plan,  # unknown names get the default
        "limits": limits,
        "max_text_chars": min(limits.max_text_chars, settings.speech_max_chars),
        "running": counts.get("RUNNING", 0) + counts.get("CANCELING", 0),
        "queued": counts.get("QUEUED", 0),
        "total": sum(counts.values()),
        "endpoints": endpoints,
        "stored": stored,
        "chart_json": json.dumps(chart),
        "per_day": sorted(per_day.items()),
        "week_total": sum(count for _, count in hours),
        "peak": max(hours, key=lambda pair: pair[1]) if hours else None,
    }
    return render(request, viewer, "usage.html", context)
