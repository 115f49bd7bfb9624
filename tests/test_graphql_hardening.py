"""GraphQL hardening on the real API: alias and token limits, and a bounded fuzz run over the schema
(queries and mutations generated from it, valid and invalid): never a 500, never a traceback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx
import hypothesis_graphql
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import nodes

from service.graphql_cost import LIST_SIZE
from service.jobs.graphql import SIGNED_URL_COST
from service.schema import MAX_ALIASES, MAX_COST, MAX_TOKENS, schema
from tests.conftest import GraphQLClient, TenantHandle
from tests.servers import ApiProcess

FUZZ_EXAMPLES = 60
SDL = schema.as_str()
SCALARS = {
    "DateTime": st.datetimes(timezones=st.just(UTC)).map(lambda moment: nodes.String(moment.isoformat())),
    "JSON": st.just(nodes.Null),
}


def test_too_many_aliases_are_refused(gql: GraphQLClient) -> None:
    def aliased(count: int) -> str:
        return "{ " + " ".join(f"a{n}: viewer {{ id }}" for n in range(count)) + " }"

    assert "errors" not in gql.post(aliased(MAX_ALIASES)).json()
    response = gql.post(aliased(MAX_ALIASES + 1))
    assert response.status_code == 200
    [error] = response.json()["errors"]
    assert error["message"] == f"{MAX_ALIASES + 1} aliases found. Allowed: {MAX_ALIASES}"


def test_too_many_tokens_are_refused_before_parsing_the_rest(gql: GraphQLClient) -> None:
    fields = " ".join(["__typename"] * (MAX_TOKENS + 10))
    response = gql.post("{ " + fields + " }")
    assert response.status_code in (200, 400)
    [error] = response.json()["errors"]
    assert "more than 2000 tokens" in error["message"]
    assert "errors" not in gql.post("{ " + " ".join(["__typename"] * 100) + " }").json()


def test_a_costly_aliased_query_is_refused_before_it_runs_with_its_cost_and_the_limit(
    gql: GraphQLClient,
) -> None:
    page = "jobs(first: 100) { edges { node { id artifact { downloadUrl } } } }"
    one_page = 1 + 100 * (1 + 1 + 1 + SIGNED_URL_COST)  # connection, then per job: edge, node, artifact, URL
    costly = "{ " + " ".join(f"a{n}: {page}" for n in range(MAX_ALIASES)) + " }"
    response = gql.post(costly)
    assert response.status_code == 200
    body = response.json()
    assert body["data"] is None  # refused before execution: no field ran
    [error] = body["errors"]
    cost = MAX_ALIASES * one_page
    assert error["extensions"] == {"code": "QUERY_TOO_COSTLY", "cost": cost, "maxCost": MAX_COST}
    assert f"may cost {cost}, over the limit of {MAX_COST}" in error["message"]
    assert "path" not in error
    assert "errors" not in gql.post("{ " + page + " }").json()  # one page of it is fine


def test_the_cost_counts_list_sizes_given_by_variables_and_defaults(gql: GraphQLClient) -> None:
    query = "query Q($n: Int) { jobs(first: $n) { nodes { id events { type } } } }"
    per_job = 1 + LIST_SIZE  # the node and its events (a list without `first`)
    fits = (MAX_COST - 1) // per_job
    assert "errors" not in gql.post(query, {"n": 0}).json()
    over = gql.post(query, {"n": fits + 1}).json()
    assert over["errors"][0]["extensions"]["cost"] == 1 + (fits + 1) * per_job
    assert over["errors"][0]["extensions"]["code"] == "QUERY_TOO_COSTLY"
    aliased = "{ " + " ".join(f"a{n}: jobs {{ nodes {{ events {{ type }} }} }}" for n in range(20)) + " }"
    refused = gql.post(aliased).json()  # no `first`: the default page of 20, each with 20 events
    assert refused["errors"][0]["extensions"]["cost"] == 20 * (1 + LIST_SIZE * per_job)


INTROSPECTION = ["{ __schema { types { name } } }", '{ __type(name: "Job") { name } }']


@pytest.fixture(scope="module")
def explorable_api(env: dict[str, str], workdir: Path) -> Iterator[ApiProcess]:
    """An API with GRAPHQL_IDE and GRAPHQL_INTROSPECTION on, as `claimcheck dev` runs it."""
    enabled = {**env, "GRAPHQL_IDE": "true", "GRAPHQL_INTROSPECTION": "true"}
    process = ApiProcess(enabled, workdir / "api-explorable.log")
    process.env["PUBLIC_BASE_URL"] = process.url
    yield process.start()
    process.stop()


def _graphiql_page(base_url: str) -> httpx.Response:
    return httpx.get(f"{base_url}/graphql", headers={"accept": "text/html"})


@pytest.mark.parametrize("document", INTROSPECTION)
def test_introspection_is_refused_by_default(gql: GraphQLClient, document: str) -> None:
    response = gql.post(document)
    assert response.status_code == 200
    body = response.json()
    assert body.get("data") is None, body
    assert body["errors"]
    assert all("introspection has been disabled" in e["message"] for e in body["errors"])
    assert "errors" not in gql.post("{ __typename viewer { __typename } }").json()


def test_the_graphiql_page_is_not_served_by_default(api: ApiProcess) -> None:
    page = _graphiql_page(api.url)
    assert page.status_code in (400, 404, 405), page.text
    assert "graphiql" not in page.text.lower()


@pytest.mark.parametrize("document", INTROSPECTION)
def test_introspection_works_when_enabled(
    explorable_api: ApiProcess, tenant: TenantHandle, document: str
) -> None:
    with GraphQLClient(explorable_api.url, tenant.api_key).http as http:
        body = http.post("/graphql", json={"query": document}).json()
    assert "errors" not in body, body
    assert "Job" in json.dumps(body["data"])


def test_the_graphiql_page_is_served_without_a_key_when_enabled(explorable_api: ApiProcess) -> None:
    page = _graphiql_page(explorable_api.url)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "graphiql" in page.text.lower()


def _check(response: Any, document: str) -> None:
    assert response.status_code != 500, (document, response.text)
    assert response.status_code < 500, (document, response.text)
    assert "Traceback" not in response.text, (document, response.text)
    assert 'File "' not in response.text, (document, response.text)
    body = response.json()
    assert "data" in body or "errors" in body or "detail" in body, (document, body)
    for error in body.get("errors") or []:
        # a masked error is an unexpected exception on the server: the fuzz run wants none
        assert error.get("message") != "Unexpected error.", (document, body)


@pytest.mark.parametrize("mode", [hypothesis_graphql.Mode.POSITIVE, hypothesis_graphql.Mode.NEGATIVE])
def test_fuzzed_documents_never_get_a_500_or_a_traceback(gql: GraphQLClient, mode: Any) -> None:
    strategy = hypothesis_graphql.from_schema(SDL, custom_scalars=SCALARS, mode=mode)

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(document=strategy)
    def run(document: str) -> None:
        _check(gql.post(document), document)

    run()


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None)
@given(
    variables=st.dictionaries(
        st.sampled_from(["id", "first", "after", "input", "since", "status"]),
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers()
            | st.floats(allow_nan=False, allow_infinity=False)
            | st.text(max_size=50),
            lambda inner: (
                st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
            ),
            max_leaves=8,
        ),
    )
)
def test_fuzzed_variables_never_get_a_500_or_a_traceback(variables: dict[str, Any]) -> None:
    document = """
    query Q($id: ID!, $first: Int, $after: String, $status: [JobStatus!]) {
      job(id: $id) { id } jobs(first: $first, after: $after, status: $status) { edges { cursor } }
    }
    """
    _check(_FUZZ_CLIENT[0].post(document, variables), document + repr(variables))


_FUZZ_CLIENT: list[GraphQLClient] = []


@pytest.fixture(autouse=True)
def _fuzz_client(gql: GraphQLClient) -> None:
    _FUZZ_CLIENT[:] = [gql]


def test_sibling_fields_sharing_the_request_session_do_not_collide(gql: GraphQLClient) -> None:
    document = (
        "{ viewer { id createdAt } webhookEndpoints { id } jobs { edges { cursor } } a: viewer { name } }"
    )
    for _ in range(20):  # found by the fuzz run: concurrent sibling resolvers on one session were a 500
        response = gql.post(document)
        assert response.status_code == 200, response.text
        assert "errors" not in response.json(), response.text
