"""generateSpeech, job and jobs over real HTTP: validation, idempotency, pagination, isolation, bad input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import JOB_QUERY, SPEECH_MUTATION, GraphQLClient, TenantHandle
from tests.servers import ApiProcess

JOBS = """
query Jobs($first: Int, $after: String, $status: [JobStatus!], $kind: String) {
  jobs(first: $first, after: $after, status: $status, kind: $kind) {
    edges { cursor node { id status kind } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}
"""


def _create(gql: GraphQLClient, **input: Any) -> dict[str, Any]:
    payload: dict[str, Any] = gql(SPEECH_MUTATION, {"input": input})["generateSpeech"]
    return payload


def _job_count(gql: GraphQLClient) -> int:
    return int(gql("{ viewer { usage { totalJobs } } }")["viewer"]["usage"]["totalJobs"])


@pytest.mark.parametrize(
    ("input", "field", "fragment"),
    [
        ({"text": ""}, ["input", "text"], "must not be empty"),
        ({"text": "   \n\t "}, ["input", "text"], "must not be empty"),
        ({"text": "x" * 5001}, ["input", "text"], "at most 5000 characters"),
        ({"text": "bell \u0007 here"}, ["input", "text"], "control character U+0007"),
        ({"text": "nul \u0000 here"}, ["input", "text"], "control character U+0000"),
        ({"text": "hi", "voice": "klingon"}, ["input", "voice"], "unknown voice"),
        ({"text": "hi", "idempotencyKey": ""}, ["input", "idempotencyKey"], "1 to 200"),
    ],
)
def test_bad_speech_input_is_a_validation_user_error_and_writes_nothing(
    gql: GraphQLClient, input: dict[str, Any], field: list[str], fragment: str
) -> None:
    payload = _create(gql, **input)
    assert payload["job"] is None
    [error] = payload["userErrors"]
    assert error["code"] == "VALIDATION"
    assert error["field"] == field
    assert fragment in error["message"]
    assert _job_count(gql) == 0


def test_text_with_newlines_tabs_and_unicode_is_accepted(gql: GraphQLClient) -> None:
    payload = _create(gql, text="Grüße!\n\tこんにちは — «ça va?»")
    assert payload["userErrors"] == []
    assert payload["job"]["status"] == "QUEUED"


def test_same_idempotency_key_and_input_returns_the_same_job(gql: GraphQLClient) -> None:
    first = _create(gql, text="once only", idempotencyKey="order-42")["job"]
    again = _create(gql, text="once only", idempotencyKey="order-42")["job"]
    assert again["id"] == first["id"]
    assert again["idempotencyKey"] == "order-42"
    assert _job_count(gql) == 1
    job = gql(JOB_QUERY, {"id": first["id"]})["job"]
    assert [e["type"] for e in job["events"]].count("job.queued") == 1


def test_same_idempotency_key_with_other_input_is_a_conflict(gql: GraphQLClient) -> None:
    _create(gql, text="first", idempotencyKey="k1")
    payload = _create(gql, text="second", idempotencyKey="k1")
    assert payload["job"] is None
    assert payload["userErrors"][0]["code"] == "IDEMPOTENCY_CONFLICT"
    assert _job_count(gql) == 1


def test_idempotency_keys_belong_to_one_tenant(
    gql: GraphQLClient,
    make_tenant: Callable[..., TenantHandle],
    client_for: Callable[[str | None], GraphQLClient],
) -> None:
    other = client_for(make_tenant("other").api_key)
    mine = _create(gql, text="same", idempotencyKey="shared")["job"]
    theirs = _create(other, text="same", idempotencyKey="shared")["job"]
    assert mine["id"] != theirs["id"]


def test_jobs_paginate_newest_first_and_filter(gql: GraphQLClient) -> None:
    created = [_create(gql, text=f"job {i}")["job"]["id"] for i in range(5)]
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        page = gql(JOBS, {"first": 2, "after": after})["jobs"]
        seen += [edge["node"]["id"] for edge in page["edges"]]
        pages += 1
        assert page["pageInfo"]["hasPreviousPage"] == (after is not None)
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == list(reversed(created))
    assert pages == 3

    assert len(gql(JOBS, {"status": ["QUEUED", "RUNNING", "SUCCEEDED"]})["jobs"]["edges"]) == 5
    assert gql(JOBS, {"status": ["FAILED"]})["jobs"]["edges"] == []
    assert len(gql(JOBS, {"kind": "speech"})["jobs"]["edges"]) == 5
    assert gql(JOBS, {"kind": "export"})["jobs"]["edges"] == []
    empty = gql(JOBS, {"first": 0})["jobs"]
    assert empty["edges"] == []
    assert empty["pageInfo"]["hasNextPage"] is True


@pytest.mark.parametrize("variables", [{"first": -1}, {"first": 101}, {"after": "bm9wZQ=="}, {"after": "!!"}])
def test_bad_pagination_arguments_are_clear_errors(gql: GraphQLClient, variables: dict[str, Any]) -> None:
    body = gql.post(JOBS, variables).json()
    assert body["errors"][0]["extensions"]["code"] == "VALIDATION"


def test_another_tenants_job_is_exactly_like_a_missing_one(
    gql: GraphQLClient,
    make_tenant: Callable[..., TenantHandle],
    client_for: Callable[[str | None], GraphQLClient],
) -> None:
    mine = _create(gql, text="private")["job"]["id"]
    other = client_for(make_tenant("intruder").api_key)
    missing = mine[:-4] + ("AAAA" if not mine.endswith("AAAA") else "BBBB")
    assert other(JOB_QUERY, {"id": mine}) == other(JOB_QUERY, {"id": missing}) == {"job": None}
    assert other(JOBS)["jobs"]["edges"] == []
    assert other(JOB_QUERY, {"id": "not-even-an-id"}) == {"job": None}


def test_malformed_requests_get_clear_errors_never_500(api: ApiProcess, tenant: TenantHandle) -> None:
    headers = {"authorization": f"Bearer {tenant.api_key}"}
    url = f"{api.url}/graphql"
    cases: list[dict[str, Any]] = [
        {"content": b"{not json", "headers": {**headers, "content-type": "application/json"}},
        {"json": {"query": "{ job(id: ) { id } }"}},
        {"json": {"query": "{ nope }"}},
        {"json": {"query": "mutation { generateSpeech(input: {text: 5}) { job { id } } }"}},
        {"json": {"query": SPEECH_MUTATION, "variables": {"input": {"text": ["a"]}}}},
        {"json": {"query": SPEECH_MUTATION, "variables": {"input": {"voice": "en"}}}},
        {"json": {"query": '{ jobs(first: "ten") { edges { cursor } } }'}},
        {"json": {"query": "{ viewer { " + "id " * 5 + "}" * 3}},
        {"json": {}},
        {"json": []},
    ]
    for case in cases:
        response = httpx.post(url, headers=case.pop("headers", headers), **case)
        assert 400 <= response.status_code < 500 or "errors" in response.json(), (case, response.text)
        assert response.status_code != 500, (case, response.text)
        assert "Traceback" not in response.text, (case, response.text)


def test_huge_bodies_are_refused_with_413(api: ApiProcess, tenant: TenantHandle) -> None:
    headers = {"authorization": f"Bearer {tenant.api_key}"}
    big = {"query": SPEECH_MUTATION, "variables": {"input": {"text": "a" * 2_000_000}}}
    response = httpx.post(f"{api.url}/graphql", json=big, headers=headers)
    assert response.status_code == 413

    def chunks() -> Any:
        yield b'{"query": "' + b"a" * 600_000
        yield b"a" * 600_000 + b'"}'

    streaming = {**headers, "content-type": "application/json"}
    streamed = httpx.post(f"{api.url}/graphql", content=chunks(), headers=streaming)  # no Content-Length
    assert streamed.status_code == 413


def test_deeply_nested_queries_are_refused(gql: GraphQLClient) -> None:
    deep = "{ jobs { edges { node { events { type } } } pageInfo { endCursor } } }"
    assert "errors" not in gql.post(deep).json()
    nested = "{ __schema { types { fields { type { fields { type { fields { name } } } } } } } }"
    body = gql.post(nested).json()
    assert body["errors"][0]["message"] == "Maximum introspection depth exceeded"
