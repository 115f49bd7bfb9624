"""Session-wide real servers and per-test helpers.

Postgres and Redis come from TEST_DATABASE_URL / TEST_REDIS_URL when given, else embedded servers
started here. Each session gets a fresh database built by `alembic upgrade head`.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis
from sqlmodel import Session

import service.tables  # noqa: F401  (every table registered before the ORM is used)
from service.embedded import EmbeddedPostgres, EmbeddedRedis
from tests.servers import (
    ApiProcess,
    ServiceProcess,
    clear_caches,
    create_database,
    drop_database,
    service_env,
)

TERMINAL = {"SUCCEEDED", "FAILED", "CANCELED"}


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="claimcheck-tests-") as path:
        yield Path(path)


@pytest.fixture(scope="session")
def postgres_server_url(workdir: Path) -> Iterator[str]:
    if os.environ.get("TEST_DATABASE_URL"):
        yield os.environ["TEST_DATABASE_URL"]
        return
    server = EmbeddedPostgres(workdir / "postgres", delete_on_stop=True)
    url = server.start()
    yield url
    server.stop()


@pytest.fixture(scope="session")
def redis_url(workdir: Path) -> Iterator[str]:
    if os.environ.get("TEST_REDIS_URL"):
        url = os.environ["TEST_REDIS_URL"]
        Redis.from_url(url).flushdb()
        yield url
        return
    server = EmbeddedRedis(workdir / "redis", persist=False)
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def database_url(postgres_server_url: str) -> Iterator[str]:
    from service.migrate import upgrade

    url = create_database(postgres_server_url)
    upgrade(url)
    yield url
    drop_database(postgres_server_url, url)


@pytest.fixture(scope="session")
def env(database_url: str, redis_url: str, workdir: Path) -> Iterator[dict[str, str]]:
    """The service environment, applied to this process too."""
    values = service_env(database_url, redis_url, workdir / "artifacts", "http://127.0.0.1:0")
    saved = dict(os.environ)
    os.environ.update(values)
    clear_caches()
    yield values
    from service.db import get_engine

    get_engine().dispose()
    os.environ.clear()
    os.environ.update(saved)
    clear_caches()


@pytest.fixture(scope="session")
def api(env: dict[str, str], workdir: Path) -> Iterator[ApiProcess]:
    """The API under uvicorn, as in production, on a free port."""
    process = ApiProcess(env, workdir / "api.log")
    process.env["PUBLIC_BASE_URL"] = process.url
    os.environ["PUBLIC_BASE_URL"] = process.url
    clear_caches()
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def worker(env: dict[str, str], workdir: Path, api: ApiProcess) -> Iterator[ServiceProcess]:
    """One RQ worker process on the jobs queue, started after the API (same settings)."""
    process = ServiceProcess(["worker"], {**env, "PUBLIC_BASE_URL": api.url}, workdir / "worker.log").start()
    yield process
    process.stop()


@pytest.fixture
def db(env: dict[str, str]) -> Iterator[Session]:
    """A session inside a transaction that is rolled back after the test."""
    from service.db import get_engine

    connection = get_engine().connect()
    transaction = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    yield session
    session.close()
    transaction.rollback()
    connection.close()


@dataclass
class TenantHandle:
    id: str
    api_key: str
    key_id: str


@pytest.fixture
def make_tenant(env: dict[str, str]) -> Callable[..., TenantHandle]:
    """Create committed tenants (each test gets its own, so tests never see each other's jobs)."""
    from service.db import session_scope
    from service.settings import get_settings
    from service.tenants.service import create_key, create_tenant

    def make(name: str = "acme", scopes: list[str] | None = None) -> TenantHandle:
        with session_scope() as session:
            tenant, issued = create_tenant(session, name, server_secret=get_settings().secret_key)
            if scopes is not None:
                issued = create_key(
                    session, tenant.id, server_secret=get_settings().secret_key, scopes=scopes
                )
        return TenantHandle(id=tenant.id, api_key=issued.full_key, key_id=issued.key.id)

    return make


@pytest.fixture
def tenant(make_tenant: Callable[..., TenantHandle]) -> TenantHandle:
    return make_tenant()


def commit_job_without_enqueue(tenant_id: str, kind: str, raw_input: dict[str, Any]) -> str:
    """Create and commit a job exactly as a request does, but lose its after-commit enqueue.

    This is a crash between the commit and the enqueue: Postgres has the job, RQ never heard of it.
    """
    from service.db import AFTER_COMMIT, session_scope
    from service.jobs.service import create_job

    with session_scope() as session:
        job = create_job(session, tenant_id, kind, raw_input, None)
        dropped = session.info.pop(AFTER_COMMIT, [])  # the crash: every after-commit callback is lost
        assert dropped, "create_job registered no after-commit enqueue"
    return job.id


class GraphQLClient:
    """POSTs GraphQL over real HTTP with a tenant's key."""

    def __init__(self, base_url: str, api_key: str | None) -> None:
        self.base_url = base_url
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=30)

    def post(self, query: str, variables: dict[str, Any] | None = None) -> httpx.Response:
        return self.http.post("/graphql", json={"query": query, "variables": variables or {}})

    def __call__(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.post(query, variables)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert "errors" not in body, body
        data: dict[str, Any] = body["data"]
        return data

    def wait_for_job(self, job_id: str, timeout: float = 60, until: set[str] = TERMINAL) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job: dict[str, Any] = self(JOB_QUERY, {"id": job_id})["job"]
            if job["status"] in until or time.monotonic() > deadline:
                return job
            time.sleep(0.1)


JOB_QUERY = """
query Job($id: ID!) {
  job(id: $id) {
    id kind status progress message attempt createdAt startedAt finishedAt idempotencyKey
    error { code message retryable }
    artifact { filename contentType byteSize sha256 downloadUrl }
    events { type at data }
  }
}
"""

SPEECH_MUTATION = """
mutation Speak($input: GenerateSpeechInput!) {
  generateSpeech(input: $input) {
    job { id status kind attempt idempotencyKey }
    userErrors { code field message }
  }
}
"""


@pytest.fixture
def gql(api: ApiProcess, tenant: TenantHandle) -> Iterator[GraphQLClient]:
    client = GraphQLClient(api.url, tenant.api_key)
    yield client
    client.http.close()


@pytest.fixture
def client_for(api: ApiProcess) -> Iterator[Callable[[str | None], GraphQLClient]]:
    clients: list[GraphQLClient] = []

    def make(api_key: str | None) -> GraphQLClient:
        clients.append(GraphQLClient(api.url, api_key))
        return clients[-1]

    yield make
    for client in clients:
        client.http.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On a failure, attach the tail of each service process's log to the report."""
    report = yield
    if report.failed and call.when == "call":
        for name in ("api", "worker"):
            process = item.funcargs.get(name) if hasattr(item, "funcargs") else None
            if isinstance(process, ServiceProcess):
                report.sections.append((f"{name} log (tail)", process.log()[-6000:]))
    return report
