"""`Job.events` for a page of jobs is read in one query per request, with the same answer as job by job.

The GraphQL router runs in this process (the real schema and context, on the session's Postgres) so
that a SQLAlchemy listener can count the statements one request sends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import event

from service.app import ClaimcheckGraphQL, get_context
from service.db import get_engine, session_scope
from service.jobs.service import cancel, find_job
from service.schema import schema
from tests.conftest import TenantHandle, commit_job_without_enqueue

PAGE = "{ jobs(first: 50) { edges { node { id events { type at data } } } } }"
ONE = "query J($id: ID!) { job(id: $id) { events { type at data } } }"


def _graphql_app() -> FastAPI:
    app = FastAPI()
    app.include_router(ClaimcheckGraphQL(schema, context_getter=get_context), prefix="/graphql")
    return app


def _post(app: FastAPI, api_key: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            body = {"query": query, "variables": variables or {}}
            return await client.post("/graphql", json=body, headers={"authorization": f"Bearer {api_key}"})

    response = asyncio.run(call())
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    assert "errors" not in answer, answer
    data: dict[str, Any] = answer["data"]
    return data


@contextlib.contextmanager
def _statements() -> Iterator[list[str]]:
    """The SQL statements sent while the block runs."""
    sent: list[str] = []

    def record(*args: Any) -> None:
        sent.append(str(args[2]))  # (connection, cursor, statement, parameters, context, executemany)

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _add_jobs(tenant: TenantHandle, count: int) -> None:
    """count QUEUED jobs, every other one canceled (two events instead of one)."""
    for n in range(count):
        job_id = commit_job_without_enqueue(tenant.id, "test-slow", {"seconds": 1})
        if n % 2:
            with session_scope() as session:
                job = find_job(session, tenant.id, job_id)
                assert job is not None
                cancel(session, job)


def test_a_page_of_jobs_reads_its_events_in_one_query_with_the_same_answer(
    make_tenant: Any,
) -> None:
    app = _graphql_app()
    counts = []
    for size in (3, 12):
        tenant = make_tenant(f"events-{size}")
        _add_jobs(tenant, size)
        with _statements() as sent:
            edges = _post(app, tenant.api_key, PAGE)["jobs"]["edges"]
        assert len(edges) == size
        assert len([statement for statement in sent if "FROM job_events" in statement]) == 1
        counts.append(len(sent))
        for edge in edges:  # the same events, in the same order, as asking for the job alone
            alone = _post(app, tenant.api_key, ONE, {"id": edge["node"]["id"]})["job"]["events"]
            assert edge["node"]["events"] == alone
            assert [event["type"] for event in alone] in (["job.queued"], ["job.queued", "job.canceled"])
        assert sorted(len(edge["node"]["events"]) for edge in edges) == sorted(
            [1 + n % 2 for n in range(size)]
        )
    assert counts[0] == counts[1]  # the statements a request sends do not grow with its page
