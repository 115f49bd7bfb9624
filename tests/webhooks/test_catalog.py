"""The event catalog: served over HTTP and GraphQL, valid JSON Schema 2020-12, and every body a real
receiver gets validates against the schema published for its type."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
from jsonschema import Draft202012Validator, FormatChecker

from service.db import session_scope
from service.jobs.service import create_job
from service.scheduler import run_once
from service.webhooks.events import EVENT_TYPES
from tests.conftest import SPEECH_MUTATION, GraphQLClient, TenantHandle, commit_job_without_enqueue
from tests.receiver import Answer, Received, Receiver
from tests.servers import ApiProcess, ServiceProcess
from tests.webhooks.support import create_endpoint, send_test

CATALOG_QUERY = "{ webhookEventTypes { type description schema example } }"
CANCEL = "mutation C($id: ID!) { cancelJob(id: $id) { job { status } userErrors { code message } } }"


def published(api: ApiProcess) -> dict[str, Draft202012Validator]:
    """The catalog as a partner fetches it (no key), as a validator per event type."""
    response = httpx.get(f"{api.url}/webhooks/event-types")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    entries = response.json()["event_types"]
    return {
        entry["type"]: Draft202012Validator(entry["schema"], format_checker=FormatChecker())
        for entry in entries
    }


def test_the_catalog_lists_every_event_type_with_a_valid_schema_that_its_example_fits(
    api: ApiProcess, gql: GraphQLClient
) -> None:
    entries = httpx.get(f"{api.url}/webhooks/event-types").json()["event_types"]
    assert [entry["type"] for entry in entries] == list(EVENT_TYPES)
    for name in ("job.queued", "job.succeeded", "endpoint.failing", "endpoint.recovered", "webhook.test"):
        assert name in EVENT_TYPES
    for entry in entries:
        Draft202012Validator.check_schema(entry["schema"])
        assert entry["schema"]["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert entry["schema"]["properties"]["type"]["const"] == entry["type"]
        assert entry["description"]
        validator = Draft202012Validator(entry["schema"], format_checker=FormatChecker())
        validator.validate(entry["example"])
        wrong = {**entry["example"], "data": {**entry["example"]["data"], "undeclared": 1}}
        assert not validator.is_valid(wrong), entry["type"]

    # The GraphQL query answers the same list, with a key of any scope.
    assert gql(CATALOG_QUERY)["webhookEventTypes"] == entries


def _types(requests: list[Received]) -> list[str]:
    return [json.loads(request.body)["type"] for request in requests]


def _has_all(*wanted: str) -> Callable[[list[Received]], bool]:
    return lambda requests: all(_types(requests).count(name) >= 1 for name in wanted)


def test_every_body_the_deliverer_sends_validates_against_its_published_schema(
    api: ApiProcess,
    gql: GraphQLClient,
    tenant: TenantHandle,
    receiver: Receiver,
    path: str,
    worker: ServiceProcess,
) -> None:
    validators = published(api)
    endpoint = create_endpoint(gql, receiver.url + path)["endpoint"]
    gone = create_endpoint(gql, receiver.url + path + "/gone", eventTypes=["webhook.test"])["endpoint"]
    receiver.script(path + "/gone", Answer(status=410))

    speech = gql(SPEECH_MUTATION, {"input": {"text": "One sentence. And another, for progress."}})
    assert speech["generateSpeech"]["userErrors"] == []
    with session_scope() as session:  # crashes once (a retry: job.queued again), then fails for good
        create_job(session, tenant.id, "test-segfault", {}, None)
    canceled = gql(CANCEL, {"id": commit_job_without_enqueue(tenant.id, "test-slow", {})})["cancelJob"]
    assert canceled["userErrors"] == []
    send_test(gql, endpoint["id"])
    send_test(gql, gone["id"])  # 410: the endpoint is disabled, and endpoint.disabled comes here

    everything = (
        "job.queued",
        "job.started",
        "job.progress",
        "job.succeeded",
        "job.failed",
        "job.canceled",
        "webhook.test",
        "endpoint.disabled",
    )
    deadline = time.monotonic() + 60
    requests = receiver.at(path)
    while not _has_all(*everything)(requests) and time.monotonic() < deadline:
        run_once()  # the scheduler's sweep hands the crashed job's retry to the worker
        requests = receiver.wait_for(path, _has_all(*everything), timeout=1)
    assert set(everything) <= set(_types(requests)), _types(requests)
    retried = [
        body for body in map(_body, requests) if body["type"] == "job.queued" and "code" in body["data"]
    ]
    assert retried, "the crashed job's retry sends job.queued with the failed attempt's code"
    for request in requests:
        body = _body(request)
        errors = [error.message for error in validators[body["type"]].iter_errors(body)]
        assert errors == [], (body["type"], errors, body)


def _body(request: Received) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(request.body)
    return body
