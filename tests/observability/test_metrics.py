"""Metrics recorded through observability.metrics appear on the Prometheus endpoint each process serves
on METRICS_PORT, never on the public API port."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from observability import metrics
from observability.metrics import (
    HISTOGRAMS,
    PROMETHEUS_NAMES,
    TOP_TENANTS,
    DeliveryBacklog,
    OutboxReading,
    attempt_outcome,
    note_sweep,
    record_endpoint_disabled,
    record_http_request,
    record_job_created,
    record_job_finished,
    record_outbox_reenqueued,
    record_queue_wait,
    record_rate_limited,
    record_subscription_render,
    record_webhook_attempt,
    record_webhook_delivered,
    register_deliverer,
    register_outbox,
    register_queue_depth,
    register_webhook_backlog,
    register_worker_slots,
    start_metrics_server,
    status_class,
)
from service.embedded import free_port
from tests.conftest import SPEECH_MUTATION, GraphQLClient, TenantHandle, commit_job_without_enqueue
from tests.servers import ApiProcess, ServiceProcess

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(exposition: str) -> Samples:
    """Every sample by (name, labels without OpenTelemetry's scope labels)."""
    found: Samples = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels = frozenset((k, v) for k, v in sample.labels.items() if not k.startswith("otel_scope"))
            found[(sample.name, labels)] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def endpoint(meter_provider: None) -> Iterator[str]:
    """The scrape URL of a metrics server in this process, as METRICS_PORT starts one."""
    server, thread = start_metrics_server(0, addr="127.0.0.1")
    unregister = register_queue_depth(lambda: {"jobs": 7, "webhooks": 2})
    yield f"http://127.0.0.1:{server.server_port}/metrics"
    unregister()
    server.shutdown()
    server.server_close()
    thread.join(5)


def scrape(endpoint: str) -> Samples:
    response = httpx.get(endpoint, timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


def test_recorded_metrics_appear_on_the_endpoint(endpoint: str) -> None:
    before = scrape(endpoint)
    record_job_created("speech")
    record_job_finished("speech", "SUCCEEDED", duration_seconds=1.5)
    record_job_finished("export", "FAILED")
    record_queue_wait("speech", 0.2)
    record_webhook_attempt("success", duration_seconds=0.05, status_code=204)
    record_webhook_attempt("timeout", duration_seconds=15.0, trigger="manual")
    record_webhook_delivered("job.succeeded", 0.3)
    record_endpoint_disabled("failing")
    record_rate_limited("rate")
    after = scrape(endpoint)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("claimcheck_jobs_created_total", kind="speech") == 1
    assert delta("claimcheck_jobs_finished_total", kind="speech", status="succeeded") == 1
    assert delta("claimcheck_jobs_finished_total", kind="export", status="failed") == 1
    assert delta("claimcheck_job_duration_seconds_count", kind="speech", status="succeeded") == 1
    assert delta("claimcheck_job_duration_seconds_sum", kind="speech", status="succeeded") == 1.5
    assert delta("claimcheck_job_duration_seconds_bucket", kind="speech", status="succeeded", le="2.5") == 1
    assert delta("claimcheck_job_duration_seconds_bucket", kind="speech", status="succeeded", le="1.0") == 0
    assert delta("claimcheck_job_queue_wait_seconds_count", kind="speech") == 1
    success = {"outcome": "success", "status_class": "2xx", "trigger": "scheduled"}
    assert delta("claimcheck_webhook_attempts_total", **success) == 1
    timeout = {"outcome": "timeout", "status_class": "none", "trigger": "manual"}
    assert delta("claimcheck_webhook_attempts_total", **timeout) == 1
    assert delta("claimcheck_webhook_attempt_duration_seconds_count", outcome="timeout") == 1
    assert delta("claimcheck_webhook_delivery_latency_seconds_count", event_type="job.succeeded") == 1
    assert delta("claimcheck_webhook_endpoints_disabled_total", reason="failing") == 1
    assert delta("claimcheck_rate_limit_rejections_total", limit="rate") == 1
    assert value(after, "claimcheck_queue_depth", queue="jobs") == 7
    assert value(after, "claimcheck_queue_depth", queue="webhooks") == 2


@pytest.fixture
def gauges() -> Iterator[list[int]]:
    """Every scrape-time gauge registered, as the worker and the scheduler register them; yields how
    many times the outbox was read."""
    outbox_reads: list[int] = []

    def read_outbox() -> OutboxReading:
        outbox_reads.append(1)
        return OutboxReading(oldest_queued_seconds=42.0, lag_seconds=12.0, missing_from_queue=3)

    unregisters = [
        register_worker_slots(lambda: (1, 4)),
        register_deliverer(lambda: True),
        register_webhook_backlog(lambda: DeliveryBacklog(due=5, overdue=2)),
        register_outbox(read_outbox),
    ]
    yield outbox_reads
    for unregister in unregisters:
        unregister()


def test_scrape_time_gauges_report_what_their_process_registered(endpoint: str, gauges: list[int]) -> None:
    note_sweep("outbox")
    found = scrape(endpoint)
    assert value(found, "claimcheck_worker_job_slots", state="busy") == 1
    assert value(found, "claimcheck_worker_job_slots", state="idle") == 3
    assert value(found, "claimcheck_webhook_deliverers") == 1
    assert value(found, "claimcheck_queue_depth", queue="webhooks") == 5
    assert value(found, "claimcheck_webhook_deliveries_overdue") == 2
    assert value(found, "claimcheck_jobs_oldest_queued_age_seconds") == 42
    assert value(found, "claimcheck_outbox_lag_seconds") == 12
    assert value(found, "claimcheck_outbox_missing_from_queue") == 3
    assert len(gauges) == 1, "one outbox reading serves its three gauges"
    heartbeat = value(found, "claimcheck_scheduler_last_sweep_timestamp_seconds", sweep="outbox")
    assert time.time() - 5 < heartbeat <= time.time()


def test_the_tenant_gauge_reports_only_the_tenants_with_the_most_failures(endpoint: str) -> None:
    tenants = [f"ten_top{rank:02d}" for rank in range(TOP_TENANTS + 2)]
    for rank, tenant_id in enumerate(tenants):  # far more failures than any other test records
        for _ in range(100 + rank):
            record_webhook_attempt("http_error", duration_seconds=0.01, status_code=500, tenant_id=tenant_id)
        record_webhook_attempt("success", duration_seconds=0.01, status_code=200, tenant_id=tenant_id)
    found = scrape(endpoint)
    reported = {
        dict(labels)["tenant_id"] for name, labels in found if name == "claimcheck_webhook_tenant_attempts"
    }
    assert reported == set(tenants[2:]), "the two with the fewest failures are left out"
    last = tenants[-1]
    assert value(found, "claimcheck_webhook_tenant_attempts", tenant_id=last, result="failure") == 100 + 11
    assert value(found, "claimcheck_webhook_tenant_attempts", tenant_id=last, result="success") == 1


def test_every_instrument_has_its_prometheus_name(endpoint: str, gauges: list[int]) -> None:
    record_job_created("speech")
    record_job_finished("speech", "succeeded", 1.0)
    record_queue_wait("speech", 0.1)
    record_webhook_attempt("success", duration_seconds=0.01, status_code=200, tenant_id="ten_names")
    record_webhook_delivered("job.queued", 0.01)
    record_endpoint_disabled("gone")
    record_rate_limited("quota")
    record_outbox_reenqueued(1)
    record_http_request("/graphql", "POST", 200)
    record_subscription_render(3)
    note_sweep("outbox")
    names = {name for name, _ in scrape(endpoint)}
    instruments = {
        instrument._name
        for instrument in vars(metrics).values()
        if hasattr(instrument, "_name") and str(getattr(instrument, "_name", "")).startswith("claimcheck.")
    }
    assert instruments == set(PROMETHEUS_NAMES), "PROMETHEUS_NAMES lists every instrument"
    for instrument, exported in PROMETHEUS_NAMES.items():
        expected = f"{exported}_count" if instrument in HISTOGRAMS else exported
        assert expected in names, instrument


def test_counters_with_known_labels_start_at_zero(endpoint: str) -> None:
    """A series born at 1 shows no increase: the first endpoint disabled would raise no alert."""
    found = scrape(endpoint)
    assert ("claimcheck_webhook_endpoints_disabled_total", frozenset({("reason", "failing")})) in found
    assert ("claimcheck_rate_limit_rejections_total", frozenset({("limit", "concurrency")})) in found
    refused = {"outcome": "refused", "status_class": "none", "trigger": "manual"}
    assert found[("claimcheck_webhook_attempts_total", frozenset(refused.items()))] == 0


def test_a_failing_queue_depth_callback_does_not_break_the_scrape(endpoint: str) -> None:
    def broken() -> dict[str, float]:
        raise ConnectionError("redis is away")

    unregister = register_queue_depth(broken)
    try:
        found = scrape(endpoint)
    finally:
        unregister()
    assert value(found, "claimcheck_queue_depth", queue="jobs") == 7


def test_openmetrics_when_asked(endpoint: str) -> None:
    accept = {"accept": "application/openmetrics-text; version=1.0.0"}
    response = httpx.get(endpoint, headers=accept, timeout=5)
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


def test_the_process_collector_is_scraped_too(endpoint: str) -> None:
    assert any(name.startswith("process_") for name, _ in scrape(endpoint))


@pytest.mark.parametrize(
    ("status_code", "timed_out", "refused", "not_sent", "expected"),
    [
        (200, False, False, False, "success"),
        (299, False, False, False, "success"),
        (301, False, False, False, "http_error"),
        (500, False, False, False, "http_error"),
        (410, False, False, False, "gone"),
        (None, True, False, False, "timeout"),
        (None, False, False, False, "network_error"),
        (None, False, True, False, "refused"),
        (None, False, False, True, "not_sent"),
    ],
)
def test_attempt_outcome(
    status_code: int | None, timed_out: bool, refused: bool, not_sent: bool, expected: str
) -> None:
    assert attempt_outcome(status_code, timed_out=timed_out, refused=refused, not_sent=not_sent) == expected
    assert expected in metrics.OUTCOMES


def test_status_class() -> None:
    assert [status_class(code) for code in (None, 204, 302, 404, 503)] == ["none", "2xx", "3xx", "4xx", "5xx"]


# The processes: metrics on METRICS_PORT, never on the public API port.


CANCEL = "mutation C($id: ID!) { cancelJob(id: $id) { job { id status } userErrors { code } } }"


def _scrape_when_up(url: str, process: ServiceProcess, timeout: float = 30) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return scrape(url)
        except httpx.TransportError:
            assert process.process is not None
            assert process.process.poll() is None, process.log()
            assert time.monotonic() < deadline, process.log()
            time.sleep(0.1)


def test_the_public_api_port_serves_no_metrics(api: ApiProcess) -> None:
    response = httpx.get(f"{api.url}/metrics")
    assert response.status_code == 404
    assert "claimcheck_" not in response.text
    assert "process_" not in response.text


@pytest.fixture(scope="module")
def api_with_metrics(env: dict[str, str], workdir: Path) -> Iterator[tuple[ApiProcess, str]]:
    """An API process with METRICS_PORT set, and its scrape URL."""
    metrics_port = free_port()
    api = ApiProcess({**env, "METRICS_PORT": str(metrics_port)}, workdir / "api-metrics.log")
    api.env["PUBLIC_BASE_URL"] = api.url
    api.start()
    yield api, f"http://127.0.0.1:{metrics_port}/metrics"
    api.stop()


def test_the_api_serves_its_metrics_on_metrics_port(
    api_with_metrics: tuple[ApiProcess, str], make_tenant: Callable[..., TenantHandle]
) -> None:
    api, metrics_url = api_with_metrics
    client = GraphQLClient(api.url, make_tenant().api_key)
    job = client(SPEECH_MUTATION, {"input": {"text": "counted"}})["generateSpeech"]["job"]
    assert job["status"] == "QUEUED"
    found = _scrape_when_up(metrics_url, api)
    assert value(found, "claimcheck_jobs_created_total", kind="speech") >= 1
    assert httpx.get(f"{api.url}/metrics").status_code == 404
    client.http.close()


def test_the_api_counts_responses_by_route_template_never_by_raw_path(
    api_with_metrics: tuple[ApiProcess, str],
) -> None:
    api, metrics_url = api_with_metrics
    before = _scrape_when_up(metrics_url, api)
    for path in ("/downloads/first-token", "/downloads/second-token", "/nowhere/abc", "/healthz"):
        httpx.get(f"{api.url}{path}")
    httpx.post(f"{api.url}/graphql", json={"query": "{ viewer { name } }"})  # no key: 401
    httpx.request("PROPFIND", f"{api.url}/healthz")  # a method outside the label set
    after = scrape(metrics_url)

    def delta(**labels: str) -> float:
        name = "claimcheck_http_server_requests_total"
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta(route="/downloads/{token}", method="GET", code="403") == 2
    assert delta(route="other", method="GET", code="404") == 1
    assert delta(route="/healthz", method="GET", code="200") == 1
    assert delta(route="/graphql", method="POST", code="401") == 1
    assert delta(route="/healthz", method="OTHER", code="405") == 1
    routes = {dict(labels).get("route") for name, labels in after if name.startswith("claimcheck_http")}
    assert routes <= {"/graphql", "/downloads/{token}", "/healthz", "other"}


def test_a_job_canceled_while_queued_counts_as_finished_canceled(
    api_with_metrics: tuple[ApiProcess, str], make_tenant: Callable[..., TenantHandle]
) -> None:
    """No worker ever sees such a job: the API, which cancels it, counts its end."""
    api, metrics_url = api_with_metrics
    tenant = make_tenant()
    job_id = commit_job_without_enqueue(tenant.id, "speech", {"text": "never spoken"})  # no worker takes it
    before = _scrape_when_up(metrics_url, api)
    client = GraphQLClient(api.url, tenant.api_key)
    canceled = client(CANCEL, {"id": job_id})["cancelJob"]["job"]
    client.http.close()
    assert canceled["status"] == "CANCELED"
    after = scrape(metrics_url)
    finished = "claimcheck_jobs_finished_total"
    canceled_labels = {"kind": "speech", "status": "canceled"}
    assert value(after, finished, **canceled_labels) - value(before, finished, **canceled_labels) == 1


def test_the_scheduler_serves_its_metrics_on_metrics_port_with_a_heartbeat_per_sweep(
    env: dict[str, str], workdir: Path
) -> None:
    metrics_port = free_port()
    scheduler = ServiceProcess(
        ["scheduler"], {**env, "METRICS_PORT": str(metrics_port)}, workdir / "scheduler-metrics.log"
    ).start()
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    heartbeat = "claimcheck_scheduler_last_sweep_timestamp_seconds"
    try:
        found = _scrape_when_up(url, scheduler)
        assert any(name.startswith("process_") for name, _ in found)
        sweeps = ("outbox", "lost_runs", "key_last_used", "artifact_expiry", "retention")
        deadline = time.monotonic() + 10
        # the first round's sweeps run one after another: wait until all of them have reported
        while (
            any(value(found, heartbeat, sweep=sweep) == 0 for sweep in sweeps) and time.monotonic() < deadline
        ):
            time.sleep(0.2)
            found = scrape(url)
        for sweep in sweeps:
            assert time.time() - 10 < value(found, heartbeat, sweep=sweep) <= time.time(), sweep
        for gauge in (
            "claimcheck_outbox_lag_seconds",
            "claimcheck_outbox_missing_from_queue",
            "claimcheck_jobs_oldest_queued_age_seconds",
        ):
            assert (gauge, frozenset()) in found, gauge
    finally:
        scheduler.stop()


def test_the_api_refuses_several_workers_with_a_metrics_port(env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "api", "--port", str(free_port()), "--workers", "2"],
        env={**env, "METRICS_PORT": str(free_port())},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert (
        "error (CONFIGURATION): METRICS_PORT is set, so the API runs one worker per process" in result.stderr
    )
    assert "--workers 2" in result.stderr
    assert "Traceback" not in result.stderr
