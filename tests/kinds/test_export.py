"""startExport end to end: the tenant's own history (jobs and webhook deliveries) as JSONL or CSV."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import SPEECH_MUTATION, GraphQLClient, TenantHandle
from tests.receiver import Receiver
from tests.servers import ServiceProcess

EXPORT = """
mutation E($input: StartExportInput!) {
  startExport(input: $input) { job { id kind status } userErrors { code field message } }
}
"""


@pytest.fixture
def receiver_url() -> Iterator[str]:
    server = Receiver().start()
    yield server.url + "/export-test"
    server.stop()


def _export(gql: GraphQLClient, **fields: Any) -> dict[str, Any]:
    payload = gql(EXPORT, {"input": fields})["startExport"]
    assert payload["userErrors"] == [], payload
    job = gql.wait_for_job(payload["job"]["id"])
    assert job["status"] == "SUCCEEDED", job
    return job


def _jobs(gql: GraphQLClient, count: int) -> list[str]:
    ids = []
    for index in range(count):
        payload = gql(SPEECH_MUTATION, {"input": {"text": f"Export me {index}."}})["generateSpeech"]
        ids.append(payload["job"]["id"])
    for job_id in ids:
        gql.wait_for_job(job_id)
    return ids


def test_jsonl_export_holds_this_tenants_history_and_nothing_of_anothers(
    gql: GraphQLClient,
    worker: ServiceProcess,
    make_tenant: Callable[..., TenantHandle],
    client_for: Callable[[str | None], GraphQLClient],
) -> None:
    mine = _jobs(gql, 3)
    other = client_for(make_tenant("neighbour").api_key)
    theirs = _jobs(other, 2)

    job = _export(gql, format="JSONL")
    artifact = job["artifact"]
    assert artifact["contentType"] == "application/x-ndjson"
    assert artifact["filename"] == "export.jsonl"
    body = httpx.get(artifact["downloadUrl"]).content
    assert len(body) == artifact["byteSize"]
    rows = [json.loads(line) for line in body.decode().splitlines()]
    job_ids = {row["id"] for row in rows if row["record"] == "job"}
    assert set(mine) | {job["id"]} == job_ids
    assert not job_ids & set(theirs)
    by_id = {row["id"]: row for row in rows}
    assert by_id[mine[0]]["status"] == "SUCCEEDED"
    assert by_id[mine[0]]["kind"] == "speech"


def test_csv_export_with_since_and_webhook_deliveries(
    gql: GraphQLClient, worker: ServiceProcess, receiver_url: str
) -> None:
    old = _jobs(gql, 1)
    since = datetime.now(UTC)
    create = (
        "mutation C($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) { secret } }"
    )
    gql(create, {"input": {"url": receiver_url, "eventTypes": ["job.queued"]}})
    new = _jobs(gql, 2)

    job = _export(gql, format="CSV", since=since.isoformat())
    assert job["artifact"]["contentType"] == "text/csv"
    table = list(csv.DictReader(io.StringIO(httpx.get(job["artifact"]["downloadUrl"]).text)))
    jobs = {row["id"] for row in table if row["record"] == "job"}
    assert set(new) <= jobs
    assert not set(old) & jobs
    deliveries = [row for row in table if row["record"] == "webhook_delivery"]
    assert deliveries
    assert {row["event_type"] for row in deliveries} == {"job.queued"}


def test_bad_export_input_is_a_clear_error(gql: GraphQLClient) -> None:
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    payload = gql(EXPORT, {"input": {"since": future}})["startExport"]
    assert payload["job"] is None
    assert payload["userErrors"][0]["code"] == "VALIDATION"
    assert "future" in payload["userErrors"][0]["message"]
    unknown = gql.post(EXPORT, {"input": {"format": "XML"}}).json()
    assert unknown["data"] is None
    assert "XML" in unknown["errors"][0]["message"]
