"""The dashboard and the alert rules against a real Prometheus.

promtool checks compose's config and the rules, and runs the rules' unit tests (alerts_test.yml). Then
a real Prometheus, with compose's config pointed at loopback, scrapes a real api, worker and scheduler
(each on its own METRICS_PORT, on a database and Redis of their own) while a short load runs: jobs that
succeed, fail and are canceled, a job whose enqueue is lost, webhook attempts that succeed and fail, an
endpoint disabled by a 410, a rate-limited tenant, downloads. Every PromQL expression of every
dashboard panel must then return data, and every alert rule must evaluate; the table of what each
panel and rule showed is printed (`pytest -s` shows it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.db import get_engine, session_scope
from service.embedded import EmbeddedRedis, free_port
from service.jobs.service import create_job
from service.migrate import upgrade
from service.settings import get_settings
from service.tenants.service import create_tenant
from tests.conftest import SPEECH_MUTATION, GraphQLClient, TenantHandle, commit_job_without_enqueue
from tests.observability.failing_kind import FAILING_KIND
from tests.observability.prometheus_server import (
    ALERTS_YML,
    PROMETHEUS_YML,
    ROOT,
    PanelQuery,
    PrometheusServer,
    Series,
    binary,
    dashboard_queries,
    dashboard_variables,
    generated_config,
    load_yaml,
    without_targets_and_intervals,
)
from tests.receiver import Answer, Receiver
from tests.servers import ApiProcess, ServiceProcess, clear_caches, create_database, drop_database
from tests.tenants.support import set_limits
from tests.websocket import open_socket, subscribe, ws_url_of

ALERT_TESTS = Path(__file__).with_name("alerts_test.yml")
SCRAPE_SECONDS = 1.0
STEP_SECONDS = 1.0
# Grafana's $__rate_interval: max($__interval + scrape interval, 4 x scrape interval).
RATE_INTERVAL_SECONDS = max(STEP_SECONDS + SCRAPE_SECONDS, 4 * SCRAPE_SECONDS)
PROCESSES = ("claimcheck-api", "claimcheck-worker", "claimcheck-scheduler")
FAILED_JOBS = 12  # the job failure ratio rule wants 10 finished jobs of a kind
# Panels a healthy run may leave at zero (they must still return series); every other shows a value.
ZERO_WHEN_HEALTHY = {"Webhook deliveries due and overdue", "Download 5xx share"}
# Label values the load must show with a value above zero, by panel.
EXPECTED_LABELS = {
    "Jobs finished / s": {"status": {"succeeded", "failed", "canceled"}},
    "Attempts / s by outcome": {"outcome": {"success", "http_error", "gone"}},
    "Endpoints disabled": {"reason": {"gone"}},
    "Rate-limit rejections / s": {"limit": {"rate"}},
    "API responses / s by route and status": {"route": {"/graphql", "/downloads/{token}"}},
    "Processes up": {"job": set(PROCESSES)},
    "Alerts firing": {"alertname": {"ClaimcheckWebhookEndpointDisabled"}},
}
# What the load must set off: alerts without `for` fire, the others can only be pending so soon.
EXPECTED_ALERTS = {
    "ClaimcheckWebhookEndpointDisabled": "firing",
    "ClaimcheckJobFailureRatio": "pending",
    "ClaimcheckTenantWebhookFailureRatio": "pending",
}
# ...and what must stay quiet while every process is up and sweeping.
QUIET_ALERTS = {
    "ClaimcheckWorkerDown",
    "ClaimcheckDelivererDown",
    "ClaimcheckSchedulerSweepsStopped",
    "ClaimcheckOutboxLag",
    "ClaimcheckDownloadErrors",
}


# --- promtool -----------------------------------------------------------------------------------------


def promtool(*args: str) -> str:
    result = subprocess.run([binary("promtool"), *args], capture_output=True, text=True, timeout=60, cwd=ROOT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def test_promtool_accepts_composes_prometheus_config_and_its_alert_rules() -> None:
    assert load_yaml(PROMETHEUS_YML)["rule_files"] == [ALERTS_YML.name]
    assert "SUCCESS: 1 rule files found" in promtool("check", "config", str(PROMETHEUS_YML))
    rules = [rule for group in load_yaml(ALERTS_YML)["groups"] for rule in group["rules"]]
    assert f"SUCCESS: {len(rules)} rules found" in promtool("check", "rules", str(ALERTS_YML))


def test_every_alert_rule_passes_its_promtool_unit_tests() -> None:
    assert "SUCCESS" in promtool("test", "rules", str(ALERT_TESTS))


def readme_anchors() -> set[str]:
    """The anchors GitHub gives the README's headings (outside code blocks)."""
    anchors: set[str] = set()
    in_code = False
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif line.startswith("#") and not in_code:
            heading = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", heading)))
    return anchors


def test_every_alert_rule_fires_in_a_unit_test_and_has_a_runbook_section() -> None:
    anchors = readme_anchors()
    tests = load_yaml(ALERT_TESTS)["tests"]
    firing = {
        case["alertname"] for test in tests for case in test["alert_rule_test"] if case.get("exp_alerts")
    }
    quiet = {
        case["alertname"] for test in tests for case in test["alert_rule_test"] if not case.get("exp_alerts")
    }
    for group in load_yaml(ALERTS_YML)["groups"]:
        for rule in group["rules"]:
            name = rule["alert"]
            runbook = rule["annotations"]["runbook"]
            assert runbook == f"README.md#{name.lower()}", name
            assert runbook.split("#")[1] in anchors, f"README has no section for {name}"
            assert rule["labels"]["severity"] in {"critical", "warning"}, name
            assert name in firing, f"no promtool test shows {name} firing"
            assert name in quiet, f"no promtool test shows {name} staying quiet"


def test_the_generated_config_differs_from_composes_only_in_targets_and_intervals() -> None:
    compose = load_yaml(PROMETHEUS_YML)
    targets = {"claimcheck-api": ["127.0.0.1:1"], "claimcheck-worker": ["127.0.0.1:2", "127.0.0.1:3"]}
    generated = generated_config(targets, interval_seconds=SCRAPE_SECONDS)
    assert without_targets_and_intervals(generated) == without_targets_and_intervals(compose)
    jobs = {job["job_name"]: job["static_configs"] for job in generated["scrape_configs"]}
    assert jobs["claimcheck-worker"] == [{"targets": ["127.0.0.1:2", "127.0.0.1:3"]}]
    assert jobs["claimcheck-scheduler"] == [{"targets": []}]
    assert set(PROCESSES) <= set(jobs)
    assert generated["global"]["scrape_interval"] == "1s"


# --- a real run ---------------------------------------------------------------------------------------


@dataclass
class Run:
    prometheus: PrometheusServer
    start: float
    end: float
    job_id: str
    failing_tenant: str
    logs: Callable[[], str]


@pytest.fixture(scope="module")
def isolated_env(
    env: dict[str, str], postgres_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """A database and a Redis of the run's own (the session's worker must not take its jobs or
    deliveries), for its processes and for this process, put back afterwards."""
    workdir = tmp_path_factory.mktemp("prometheus-run")
    database_url = create_database(postgres_server_url)
    upgrade(database_url)
    redis = EmbeddedRedis(workdir / "redis", persist=False)
    kinds = [*json.loads(env["KIND_MODULES"]), "tests.observability.failing_kind"]
    values = {
        **env,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis.start(),
        "STORAGE_DIR": str(workdir / "artifacts"),
        "KIND_MODULES": json.dumps(kinds),
    }
    saved = dict(os.environ)
    get_engine().dispose()
    os.environ.update(values)
    clear_caches()
    try:
        yield values
    finally:
        get_engine().dispose()
        os.environ.clear()
        os.environ.update(saved)
        clear_caches()
        redis.stop()
        drop_database(postgres_server_url, database_url)


@pytest.fixture(scope="module")
def run(isolated_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    workdir = tmp_path_factory.mktemp("prometheus")
    ports = {name: free_port() for name in PROCESSES}
    api = ApiProcess({**isolated_env, "METRICS_PORT": str(ports["claimcheck-api"])}, workdir / "api.log")
    base = {**isolated_env, "PUBLIC_BASE_URL": api.url}
    api.env["PUBLIC_BASE_URL"] = os.environ["PUBLIC_BASE_URL"] = api.url
    # One job slot: the slow job holds it while the others queue behind.
    worker_env = {**base, "METRICS_PORT": str(ports["claimcheck-worker"]), "WORKER_CONCURRENCY": "1"}
    # A longer grace than the session's: the job whose enqueue is lost stays out of RQ for a few scrapes.
    scheduler_env = {**base, "METRICS_PORT": str(ports["claimcheck-scheduler"]), "OUTBOX_GRACE_SECONDS": "3"}
    processes = [
        ServiceProcess(["worker"], worker_env, workdir / "worker.log").start(),
        ServiceProcess(["scheduler"], scheduler_env, workdir / "scheduler.log").start(),
        api,
    ]
    receiver = Receiver().start()
    targets = {name: [f"127.0.0.1:{port}"] for name, port in ports.items()}
    config = generated_config(targets, interval_seconds=SCRAPE_SECONDS)
    prometheus = PrometheusServer(config, workdir / "prometheus")

    def logs() -> str:
        return (
            "\n".join(f"--- {process.log_path.name}\n{process.log()[-3000:]}" for process in processes)
            + f"\n--- prometheus\n{prometheus.log()[-3000:]}"
        )

    try:
        api.start()
        prometheus.start()
        prometheus.wait_for_targets(PROCESSES)
        start = time.time()
        try:
            job_id, failing_tenant = run_load(api.url, receiver)
            wait_for_alerts(prometheus, EXPECTED_ALERTS)
        except BaseException:
            print(logs())  # shown with the failure
            raise
        yield Run(prometheus, start, time.time(), job_id, failing_tenant, logs)
    finally:
        prometheus.stop()
        receiver.stop()
        for process in processes:
            process.stop()


# --- the load -----------------------------------------------------------------------------------------

CANCEL = "mutation C($id: ID!) { cancelJob(id: $id) { job { id status } userErrors { code } } }"
CREATE_ENDPOINT = """
mutation E($input: CreateWebhookEndpointInput!) {
  createWebhookEndpoint(input: $input) { endpoint { id } userErrors { code message } }
}
"""
ENDPOINTS = "{ webhookEndpoints { url enabled } }"
FOLLOW = "subscription F($id: ID!) { jobUpdates(id: $id) { id status progress } }"


def _tenant(name: str) -> TenantHandle:
    with session_scope() as session:
        tenant, issued = create_tenant(session, name, server_secret=get_settings().secret_key)
    return TenantHandle(id=tenant.id, api_key=issued.full_key, key_id=issued.key.id)


def _job(tenant: TenantHandle, kind: str, raw_input: dict[str, Any]) -> str:
    """A job committed as a request commits it (a kind no mutation starts)."""
    with session_scope() as session:
        return create_job(session, tenant.id, kind, raw_input, None).id


def _speak(client: GraphQLClient, text: str) -> dict[str, Any]:
    payload: dict[str, Any] = client(SPEECH_MUTATION, {"input": {"text": text}})["generateSpeech"]
    return payload


def _endpoint(client: GraphQLClient, url: str) -> None:
    created = client(CREATE_ENDPOINT, {"input": {"url": url}})["createWebhookEndpoint"]
    assert created["userErrors"] == [], created


def _wait(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def run_load(api_url: str, receiver: Receiver) -> tuple[str, str]:
    """The load every panel and the expected alerts feed on; (a succeeded job's id, the failing tenant)."""
    steady, failing, limited = _tenant("steady"), _tenant("failing"), _tenant("limited")
    clients = [GraphQLClient(api_url, tenant.api_key) for tenant in (steady, failing, limited)]
    steady_gql, failing_gql, limited_gql = clients
    followers = contextlib.ExitStack()
    try:
        receiver.script("/fail", *[Answer(status=500)] * 1000)
        receiver.script("/gone", *[Answer(status=410)] * 1000)
        _endpoint(steady_gql, f"{receiver.url}/ok")
        _endpoint(failing_gql, f"{receiver.url}/fail")
        _endpoint(failing_gql, f"{receiver.url}/gone")

        # A slow job holds the (one) worker while the rest queue behind it; it is canceled while it runs.
        # Two subscribers follow it with the same document: one rendering per change, sent twice.
        running = _job(steady, "test-slow", {"seconds": 8, "steps": 40})
        for number in range(2):
            socket = followers.enter_context(open_socket(ws_url_of(api_url), steady.api_key))
            subscribe(socket, f"follow-{number}", FOLLOW, {"id": running})
        assert steady_gql.wait_for_job(running, until={"RUNNING"})["status"] == "RUNNING"
        spoken = [_speak(steady_gql, f"Metrics, take {n}.")["job"]["id"] for n in range(3)]
        queued = _speak(steady_gql, "Never spoken.")["job"]["id"]
        assert steady_gql(CANCEL, {"id": queued})["cancelJob"]["job"]["status"] == "CANCELED"
        failed = [_job(failing, FAILING_KIND, {}) for _ in range(FAILED_JOBS)]
        lost = commit_job_without_enqueue(steady.id, "test-slow", {"seconds": 0.1, "steps": 1})
        set_limits(limited.id, mutations_per_minute=1, burst=1)
        answers = [_speak(limited_gql, "Too fast.") for _ in range(3)]
        codes = sorted(error["code"] for answer in answers for error in answer["userErrors"])
        assert codes == ["RATE_LIMITED", "RATE_LIMITED"], answers
        accepted = [answer["job"]["id"] for answer in answers if answer["job"]]
        time.sleep(3)  # a few scrapes of the backlog and of the job missing from RQ

        assert steady_gql(CANCEL, {"id": running})["cancelJob"]["job"]["status"] == "CANCELING"
        for client, job_ids in (
            (steady_gql, [running, *spoken, lost]),
            (failing_gql, failed),
            (limited_gql, accepted),
        ):
            for job_id in job_ids:
                assert client.wait_for_job(job_id)["status"] in {"SUCCEEDED", "FAILED", "CANCELED"}
        assert steady_gql.wait_for_job(running)["status"] == "CANCELED"
        followers.close()
        assert {failing_gql.wait_for_job(job_id)["status"] for job_id in failed} == {"FAILED"}

        done = steady_gql.wait_for_job(spoken[0])
        assert done["status"] == "SUCCEEDED", done
        assert httpx.get(f"{api_url}/downloads/not-a-token", timeout=10).status_code == 403
        for _ in range(3):  # spread over a few scrapes: a rate needs the counter to move between two
            assert httpx.get(done["artifact"]["downloadUrl"], timeout=10).status_code == 200
            time.sleep(SCRAPE_SECONDS)
        # The same for the histograms: a job that ends scrapes after the others (whose series a scrape
        # may first have seen with all of them counted) moves their buckets.
        later = _speak(steady_gql, "One more, a little later.")["job"]["id"]
        assert steady_gql.wait_for_job(later)["status"] == "SUCCEEDED"

        _wait(lambda: len(receiver.at("/fail")) >= 3 * FAILED_JOBS, "failed webhook attempts")
        _wait(lambda: len(receiver.at("/ok")) >= 3 * len(spoken), "successful webhook attempts")

        def gone_disabled() -> bool:
            endpoints = failing_gql(ENDPOINTS)["webhookEndpoints"]
            return any(e["url"].endswith("/gone") and not e["enabled"] for e in endpoints)

        _wait(gone_disabled, "the 410 endpoint to be disabled")
        return spoken[0], failing.id
    finally:
        followers.close()
        for client in clients:
            client.http.close()


def _alert_states(prometheus: PrometheusServer) -> dict[str, set[str]]:
    states: dict[str, set[str]] = {}
    for alert in prometheus.api("alerts")["alerts"]:
        states.setdefault(alert["labels"]["alertname"], set()).add(alert["state"])
    return states


def wait_for_alerts(prometheus: PrometheusServer, expected: dict[str, str], timeout: float = 20) -> None:
    """Until each expected alert is in its state (or further), then two more scrapes."""
    rank = {"pending": 1, "firing": 2}
    deadline = time.monotonic() + timeout
    while True:
        states = _alert_states(prometheus)
        reached = {
            name: max((rank[state] for state in states.get(name, ())), default=0) >= rank[wanted]
            for name, wanted in expected.items()
        }
        if all(reached.values()):
            break
        assert time.monotonic() < deadline, f"alerts not as expected: {states}, wanted {expected}"
        time.sleep(0.2)
    time.sleep(2 * SCRAPE_SECONDS)


# --- what the dashboard and the rules showed ------------------------------------------------------------


def _labels(labels: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()) if key != "__name__") or "{}"


def _describe(series: list[Series]) -> str:
    """The series whose largest value is largest: its labels and that value."""
    shown = [item for item in series if item.values]
    if not shown:
        return "-"
    top = max(shown, key=lambda item: max(item.values))
    return f"{_labels(top.labels)} max={max(top.values):.4g}"


def test_every_dashboard_panel_shows_data_from_the_processes(run: Run) -> None:
    values = {
        **dashboard_variables(),
        "job_id": run.job_id,
        "__rate_interval": f"{RATE_INTERVAL_SECONDS:g}s",
        "__interval": f"{STEP_SECONDS:g}s",
        "__range": f"{round(run.end - run.start)}s",
    }
    queries, jaeger_panels = dashboard_queries(values)
    results: dict[PanelQuery, list[Series]] = {
        query: run.prometheus.query_range(query.expr, run.start, run.end, STEP_SECONDS) for query in queries
    }
    rows = [
        f"{query.panel} [{query.ref}] | {sum(1 for s in found if s.values)} series | {_describe(found)}\n"
        f"    {query.expr}"
        for query, found in results.items()
    ]
    table = "\n".join(rows + [f"{title} | Jaeger, not Prometheus" for title in jaeger_panels])
    print(f"\nDashboard panels over {run.end - run.start:.0f} s of load:\n{table}")

    empty = [query for query, found in results.items() if not any(s.values for s in found)]
    assert not empty, f"queries without data: {empty}\n{table}\n{run.logs()}"
    panels = {query.panel for query in queries}
    nonzero = {
        query.panel for query, found in results.items() if any(v != 0 for s in found for v in s.values)
    }
    assert panels - nonzero <= ZERO_WHEN_HEALTHY, f"{table}\n{run.logs()}"
    for panel, expected in EXPECTED_LABELS.items():
        found = [s for query, series in results.items() if query.panel == panel for s in series]
        for label, wanted in expected.items():
            shown = {s.labels.get(label) for s in found if any(v > 0 for v in s.values)}
            assert wanted <= shown, f"{panel}: {label} {wanted - shown} missing\n{table}"
    assert jaeger_panels, "the trace panels query Jaeger"


def test_every_alert_rule_evaluates_on_the_scraped_metrics(run: Run) -> None:
    groups = run.prometheus.api("rules", type="alert")["groups"]
    rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
    defined = [rule for group in load_yaml(ALERTS_YML)["groups"] for rule in group["rules"]]
    assert set(rules) == {rule["alert"] for rule in defined}, "Prometheus loaded every rule of alerts.yml"
    rows = []
    for rule in defined:
        loaded = rules[rule["alert"]]
        assert loaded["health"] == "ok", loaded
        active = sorted({alert["state"] for alert in loaded["alerts"]})
        matching = run.prometheus.query(rule["expr"])
        sample = ", ".join(f"{_labels(m['metric'])}={float(m['value'][1]):.4g}" for m in matching[:2])
        state = "/".join(active) or "inactive"
        rows.append(f"{rule['alert']} | {state} | {len(matching)} matching | {sample}")
    print("\nAlert rules at the end of the load:\n" + "\n".join(rows))

    names = set(re.findall(r"\bclaimcheck_[a-z0-9_]+", ALERTS_YML.read_text()))
    for name in sorted(names):
        assert run.prometheus.query(f'count({{__name__="{name}"}})'), f"{name}: no process exports it"
    for job in set(re.findall(r'job="([^"]+)"', ALERTS_YML.read_text())):
        assert run.prometheus.query(f'up{{job="{job}"}} == 1'), f"no target up for job {job}"


def test_the_load_sets_off_the_alerts_it_should_and_no_others(run: Run) -> None:
    states = _alert_states(run.prometheus)
    for name, state in EXPECTED_ALERTS.items():
        assert state in states.get(name, set()) or "firing" in states.get(name, set()), (name, states)
    assert not QUIET_ALERTS & set(states), states
    failing = [
        alert
        for alert in run.prometheus.api("alerts")["alerts"]
        if alert["labels"]["alertname"] == "ClaimcheckTenantWebhookFailureRatio"
    ]
    assert {alert["labels"]["tenant_id"] for alert in failing} == {run.failing_tenant}
