"""Chaos run: jobs and webhooks through worker kills, Redis loss, Postgres crashes, a failing receiver
and API kills; then count what was lost (it must be nothing).

    .venv/bin/python -m bench.chaos [--jobs 2000] [--seed 1] [--help]      (or `make chaos`)
    .venv/bin/python -m bench.chaos --fleet [--pgbouncer] [--no-sentinel] [--jobs 300]

It starts embedded PostgreSQL and Redis, the API, several workers (each with a deliverer), the
scheduler and a verifying receiver on loopback; creates tenants, each with an endpoint for every event
(tenant 0 also has one for terminal events only); and submits the jobs at a fixed rate, retrying each
with its idempotency key until the API answers. Meanwhile it injects, at seeded times: SIGKILL of a
worker and its work horse (restarted after a moment), a Redis restart that loses all data, a Postgres
crash (immediate shutdown, then recovery), the receiver answering 500 / too late / refusing connections
for a window, and SIGKILL of the API. A supervisor restarts any process that exits on its own, as a
process manager would, and reports it. After the last fault it drains, with the webhook retry schedule
compressed, and compares what Postgres's audit trail says happened with what the receiver verified.

--fleet runs what several hosts would: 2 APIs (submissions alternate between them), 2 schedulers and 4
workers, with Redis as a primary, a replica and three Sentinels (unless --no-sentinel) and, with
--pgbouncer, every process's DATABASE_URL through PgBouncer in transaction mode (LISTEN direct). Its
faults: SIGKILL of a scheduler, a Redis failover (the primary SIGKILLed, the replica promoted, the old
primary back as a replica), a PgBouncer restart, one API kill and the receiver's misbehaviours; no
worker is killed, so no job may run twice.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.chaos_receiver import ChaosReceiver, Tally
from bench.common import SPEECH_MUTATION, Stack, descendants, service_stack, summarize_logs
from service.webhooks.events import JOB_EVENT_TYPES
from tests.clusters import PgBouncer, SentinelRedis
from tests.servers import ApiProcess, ServiceProcess

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELED")
TERMINAL_EVENTS = ["job.succeeded", "job.failed", "job.canceled"]
ENDPOINT_MUTATION = """
mutation E($input: CreateWebhookEndpointInput!) {
  createWebhookEndpoint(input: $input) { secret userErrors { code message } }
}
"""


@dataclass(frozen=True)
class ChaosConfig:
    jobs: int = 2000
    tenants: int = 4
    workers: int = 3
    seed: int = 1
    submit_rate: float = 4.0  # jobs per second; three workers finish about 4.3/s on two cores
    worker_kills: int = 10
    redis_restarts: int = 2
    postgres_restarts: int = 2
    api_kills: int = 3
    receiver_windows: int = 2  # of each misbehaviour: 500, timeout, refused
    window_seconds: float = 8.0
    restart_after: float = 1.0  # a killed process is restarted after this long
    retry_schedule: tuple[float, ...] = (0, 1, 2, 4, 8, 15, 30, 60)
    drain_timeout: float = 600.0
    apis: int = 1
    schedulers: int = 1
    scheduler_kills: int = 0
    redis_failovers: int = 0  # with sentinel only
    pgbouncer_restarts: int = 0  # with pgbouncer only
    sentinel: bool = False
    pgbouncer: bool = False

    @property
    def chaos_seconds(self) -> float:
        """Faults are injected while jobs are being submitted."""
        return self.jobs / self.submit_rate


@dataclass(frozen=True, order=True)
class Fault:
    at: float  # seconds after the start of submission
    kind: str


def fault_plan(config: ChaosConfig) -> list[Fault]:
    """The faults and when they happen, from the seed alone."""
    rng = random.Random(config.seed)
    span = config.chaos_seconds

    def times(count: int) -> list[float]:
        return [rng.uniform(0.05 * span, 0.85 * span) for _ in range(count)]

    plan = [Fault(t, "worker-kill") for t in times(config.worker_kills)]
    plan += [Fault(t, "redis-restart") for t in times(config.redis_restarts)]
    plan += [Fault(t, "postgres-restart") for t in times(config.postgres_restarts)]
    plan += [Fault(t, "api-kill") for t in times(config.api_kills)]
    plan += [Fault(t, "scheduler-kill") for t in times(config.scheduler_kills)]
    plan += [Fault(t, "redis-failover") for t in times(config.redis_failovers)]
    plan += [Fault(t, "pgbouncer-restart") for t in times(config.pgbouncer_restarts)]
    for mode in ("error", "timeout", "refuse"):
        for t in times(config.receiver_windows):
            plan += [Fault(t, f"receiver-{mode}"), Fault(t + config.window_seconds, f"receiver-{mode}-ends")]
    return sorted(plan)


@dataclass
class Supervised:
    """A service process the supervisor keeps running; hold_until delays a planned restart."""

    role: str
    process: ServiceProcess
    hold_until: float = 0.0
    planned_down: bool = False


class Supervisor:
    """Restarts exited processes, as systemd or compose's `restart: unless-stopped` would."""

    def __init__(self, processes: list[Supervised]) -> None:
        self.processes = processes
        self.unplanned_exits: Counter[str] = Counter()
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def kill(self, target: Supervised, down_for: float) -> None:
        """SIGKILL the process and everything it started; restart it after down_for seconds."""
        with self.lock:
            target.planned_down = True
            target.hold_until = time.monotonic() + down_for
            pid = target.process.pid
            for child in [pid, *descendants(pid)]:  # the parent first: then it cannot fork again
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            assert target.process.process is not None
            target.process.process.wait()

    def all_running(self) -> bool:
        with self.lock:
            return all(p.process.process and p.process.process.poll() is None for p in self.processes)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            with self.lock:
                for target in self.processes:
                    popen = target.process.process
                    if popen is None or popen.poll() is None or time.monotonic() < target.hold_until:
                        continue
                    if not target.planned_down:
                        self.unplanned_exits[target.role] += 1
                        print(f"  ({target.role} exited on its own with code {popen.returncode}; restarting)")
                    target.planned_down = False
                    try:
                        target.process.start()
                    except RuntimeError as error:  # the API did not come up in time; try again next round
                        print(f"  ({target.role} did not restart: {str(error)[:200]})")


@dataclass
class Submissions:
    """What the client was told: a job id per idempotency key, and why requests had to be retried."""

    accepted: dict[str, str] = field(default_factory=dict)
    retried: Counter[str] = field(default_factory=Counter)  # by what the failed attempt got
    never_accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # userError codes that are not transient
    idempotency_violations: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class Answer:
    job_id: str | None = None
    rejected: str | None = None  # a userError code that retrying will not change
    retry: str | None = None  # what went wrong, when retrying may help


def submit_all(
    config: ChaosConfig, api_urls: list[str], api_keys: list[str], give_up_after: float = 300
) -> Submissions:
    """Submit config.jobs speech jobs at config.submit_rate, each retried until an API accepts it (the
    APIs taken in turn, as a load balancer would)."""
    result = Submissions()
    local = threading.local()
    clients: list[httpx.Client] = []

    def client(index: int) -> httpx.Client:
        if not hasattr(local, "clients"):
            local.clients = [httpx.Client(base_url=url, timeout=10) for url in api_urls]
            clients.extend(local.clients)
        http: httpx.Client = local.clients[index % len(api_urls)]
        return http

    def submit(index: int) -> None:
        key = f"chaos-{config.seed}-{index}"
        text = f"Order {index} is ready. Goodbye."
        variables = {"input": {"text": text, "idempotencyKey": key}}
        headers = {"authorization": f"Bearer {api_keys[index % len(api_keys)]}"}
        deadline, pause, attempt = time.monotonic() + give_up_after, 0.1, index
        while time.monotonic() < deadline:
            answer = _post(client(attempt), headers, variables)
            attempt += 1
            with result.lock:
                if answer.job_id is not None:
                    if result.accepted.setdefault(key, answer.job_id) != answer.job_id:
                        result.idempotency_violations += 1
                    return
                if answer.rejected is not None:
                    result.rejected[answer.rejected] += 1
                    return
                result.retried[answer.retry or "?"] += 1
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
        with result.lock:
            result.never_accepted += 1

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=16, thread_name_prefix="submit") as pool:
        for index in range(config.jobs):
            time.sleep(max(0.0, started + index / config.submit_rate - time.monotonic()))
            pool.submit(submit, index)
    for http in clients:
        http.close()
    return result


def _post(http: httpx.Client, headers: dict[str, str], variables: dict[str, Any]) -> Answer:
    try:
        response = http.post(
            "/graphql", json={"query": SPEECH_MUTATION, "variables": variables}, headers=headers
        )
    except httpx.HTTPError as error:
        return Answer(retry=type(error).__name__)
    try:
        body = response.json()
    except ValueError:
        return Answer(retry=f"HTTP {response.status_code}")
    errors = body.get("errors") or []
    codes = {str((error.get("extensions") or {}).get("code", "uncoded")) for error in errors}
    if response.status_code != 200 or errors:
        return Answer(retry=f"HTTP {response.status_code} " + ",".join(sorted(codes)))
    payload = body["data"]["generateSpeech"]
    if payload["job"] is not None:
        return Answer(job_id=payload["job"]["id"])
    code: str = payload["userErrors"][0]["code"]
    return Answer(retry=code) if code in ("RATE_LIMITED", "QUOTA_EXCEEDED") else Answer(rejected=code)


class Injector:
    """Carries out the fault plan against the running stack, in a thread."""

    def __init__(
        self,
        config: ChaosConfig,
        stack: Stack,
        supervisor: Supervisor,
        receiver: ChaosReceiver,
        apis: list[Supervised],
        workers: list[Supervised],
        schedulers: list[Supervised],
        infrastructure: Infrastructure,
    ) -> None:
        self.config, self.stack, self.supervisor, self.receiver = config, stack, supervisor, receiver
        self.apis, self.workers, self.schedulers = apis, workers, schedulers
        self.infrastructure = infrastructure
        self.rng = random.Random(config.seed + 1)
        self.done: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self._thread: threading.Thread | None = None

    def start(self, plan: list[Fault]) -> None:
        started = time.monotonic()
        self._thread = threading.Thread(target=self._run, args=(plan, started), name="injector", daemon=True)
        self._thread.start()

    def join(self) -> None:
        assert self._thread is not None
        self._thread.join()

    def _run(self, plan: list[Fault], started: float) -> None:
        actions: dict[str, Callable[[], bool]] = {
            "worker-kill": lambda: self._kill(self.rng.choice(self.workers)),
            "api-kill": lambda: self._kill(self.rng.choice(self.apis)),
            "scheduler-kill": lambda: self._kill(self.rng.choice(self.schedulers)),
            "redis-restart": self._restart_redis,
            "postgres-restart": self._restart_postgres,
            "redis-failover": self._fail_over_redis,
            "pgbouncer-restart": self._restart_pgbouncer,
        }
        for fault in plan:
            time.sleep(max(0.0, started + fault.at - time.monotonic()))
            if fault.kind.endswith("-ends"):  # unless a later misbehaviour took over meanwhile
                self.receiver.end_mode(fault.kind.removeprefix("receiver-").removesuffix("-ends"))
                continue
            if fault.kind.startswith("receiver-"):
                self.receiver.set_mode(fault.kind.removeprefix("receiver-"))
                applied = True
            else:
                applied = actions[fault.kind]()
            (self.done if applied else self.skipped)[fault.kind] += 1
            print(f"  {time.monotonic() - started:6.1f} s  {fault.kind}{'' if applied else ' (skipped)'}")

    def _kill(self, target: Supervised) -> bool:
        self.supervisor.kill(target, self.config.restart_after)
        return True

    def _restart_redis(self) -> bool:
        if self.stack.redis is None:
            return False
        self.stack.redis.kill()
        time.sleep(self.config.restart_after)
        self.stack.redis.start()
        return True

    def _fail_over_redis(self) -> bool:
        sentinels = self.infrastructure.sentinels
        if sentinels is None or self.infrastructure.failovers_off:
            return False
        try:
            sentinels.fail_over()
            sentinels.rejoin()  # the old primary comes back as a replica: ready for the next failover
        except RuntimeError as error:  # the Sentinels did not settle in time: the next failover is off
            named, expected = sentinels.master_port(), sentinels.primary.port
            print(f"  (redis failover: {error}; the Sentinels name {named} as master, expected {expected})")
            self.infrastructure.failovers_off = True
        return True

    def _restart_pgbouncer(self) -> bool:
        if self.infrastructure.pgbouncer is None:
            return False
        self.infrastructure.pgbouncer.restart(down_seconds=self.config.restart_after)
        return True

    def _restart_postgres(self) -> bool:
        if self.stack.postgres is None:
            return False
        self.stack.postgres.crash_and_restart(down_seconds=self.config.restart_after)
        return True


@dataclass
class ChaosReport:
    submitted: int
    never_accepted: int
    rejected: Counter[str]
    retried: Counter[str]
    idempotency_violations: int
    statuses: Counter[str]
    error_codes: Counter[str]
    lost: int
    ran_more_than_once: int
    runs_interrupted: bool
    """A worker was killed, or the database went away under running jobs (a job whose transaction
    fails mid-run is recovered by the lost-runs sweep and runs again: at least once, never lost)."""
    events_expected: int
    events_received: int
    events_missing: int
    events_unexpected: int
    duplicates: int
    order_violations: int
    signature_failures: int
    deliveries_given_up: int
    drain_seconds: float
    drained: bool
    faults: Counter[str]
    faults_skipped: Counter[str]
    unplanned_exits: Counter[str]
    receiver_answers: Counter[str]

    @property
    def ok(self) -> bool:
        return (
            self.drained
            and self.lost == 0
            and self.never_accepted == 0
            and not self.rejected
            and self.idempotency_violations == 0
            and (self.ran_more_than_once == 0 or self.runs_interrupted)
            and self.events_missing == 0
            and self.events_unexpected == 0
            and self.order_violations == 0
            and self.signature_failures == 0
        )

    def lines(self) -> list[str]:
        rows = [
            (
                "jobs submitted (accepted by the API)",
                self.submitted,
                f"retried requests: {_counts(self.retried) or 'none'}",
            ),
            ("jobs never accepted / rejected", self.never_accepted, _counts(self.rejected)),
            ("idempotency violations", self.idempotency_violations, "must be 0"),
            ("jobs terminal", sum(self.statuses[s] for s in TERMINAL), _counts(self.statuses)),
            ("jobs lost", self.lost, "must be 0; failures: " + (_counts(self.error_codes) or "none")),
            (
                "jobs run more than once",
                self.ran_more_than_once,
                "interrupted runs are recovered and run again"
                if self.runs_interrupted
                else "must be 0: no worker killed, no Postgres restart",
            ),
            ("events expected", self.events_expected, "job events x subscribed endpoints"),
            ("events received at least once", self.events_received, "must equal expected"),
            ("events missing / unexpected", f"{self.events_missing} / {self.events_unexpected}", "must be 0"),
            ("duplicate deliveries received", self.duplicates, "deduplicated by webhook-id"),
            ("per-job order violations", self.order_violations, "must be 0 (first arrivals per endpoint)"),
            ("signatures that failed verification", self.signature_failures, "must be 0"),
            ("deliveries given up (retries spent)", self.deliveries_given_up, ""),
            (
                "time to drain after faults and submits end",
                f"{self.drain_seconds:.1f} s",
                "" if self.drained else "TIMED OUT",
            ),
            ("faults injected", sum(self.faults.values()), _counts(self.faults)),
            (
                "faults skipped (no such server here)",
                sum(self.faults_skipped.values()),
                _counts(self.faults_skipped),
            ),
            (
                "processes that exited on their own",
                sum(self.unplanned_exits.values()),
                _counts(self.unplanned_exits),
            ),
            ("receiver answers", sum(self.receiver_answers.values()), _counts(self.receiver_answers)),
        ]
        return [f"{name:<40} {value!s:>10}   {note}".rstrip() for name, value, note in rows]


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counter.items()))


@dataclass
class Endpoint:
    path: str
    tenant_id: str
    event_types: list[str]


@dataclass
class Infrastructure:
    """What stands between the fleet and its servers (--fleet): Sentinels, and PgBouncer."""

    sentinels: SentinelRedis | None = None
    pgbouncer: PgBouncer | None = None
    failovers_off: bool = False
    """A failover did not settle in time: no more (the Sentinels still stop at the end)."""


@contextlib.contextmanager
def _infrastructure(config: ChaosConfig, stack: Stack) -> Iterator[Infrastructure]:
    """Start what config asks for and point stack.env (every process started later) at it."""
    infrastructure = Infrastructure()
    try:
        if config.sentinel:
            infrastructure.sentinels = SentinelRedis(stack.workdir / "sentinel").start()
            del stack.env["REDIS_URL"]
            stack.env["REDIS_SENTINELS"] = infrastructure.sentinels.addresses
        if config.pgbouncer:
            direct = stack.env["DATABASE_URL"]
            infrastructure.pgbouncer = PgBouncer(direct, stack.workdir / "pgbouncer", pool_size=10).start()
            stack.env.update(
                DATABASE_URL=infrastructure.pgbouncer.url_for(direct), DATABASE_DIRECT_URL=direct
            )
        yield infrastructure
    finally:
        if infrastructure.pgbouncer is not None:
            infrastructure.pgbouncer.stop()
        if infrastructure.sentinels is not None:
            infrastructure.sentinels.stop()


def run(config: ChaosConfig, workdir: Path | None = None) -> ChaosReport:
    """Run the chaos scenario end to end and report what was lost."""
    with service_stack(workdir=workdir, embedded=True) as stack, _receiver() as receiver:
        direct_url = stack.env["DATABASE_URL"]  # the bench's own checks never go through the pooler
        stack.env.update(
            WEBHOOK_RETRY_SCHEDULE=json.dumps(list(config.retry_schedule)),
            WEBHOOK_RETRY_JITTER="0.2",
            WEBHOOK_TIMEOUT_SECONDS="2",
            WEBHOOK_POLL_SECONDS="0.5",
            JOB_HEARTBEAT_SECONDS="1",
            JOB_STUCK_AFTER_SECONDS="6",
            LOG_LEVEL="INFO",
        )
        tenants = _create_tenants(stack, config.tenants)
        with _infrastructure(config, stack) as infrastructure:
            apis = [Supervised("api", stack.start_api(workers=1)) for _ in range(config.apis)]
            api_urls = [api.process.url for api in apis if isinstance(api.process, ApiProcess)]
            workers = [Supervised("worker", stack.start_worker(api_urls[0])) for _ in range(config.workers)]
            schedulers = []
            for index in range(config.schedulers):
                scheduler = ServiceProcess(["scheduler"], stack.env, stack.workdir / f"scheduler{index}.log")
                stack.processes.append(scheduler.start())
                schedulers.append(Supervised("scheduler", scheduler))
            supervisor = Supervisor([*apis, *workers, *schedulers])
            endpoints = _create_endpoints(api_urls[0], tenants, receiver)
            supervisor.start()
            injector = Injector(
                config, stack, supervisor, receiver, apis, workers, schedulers, infrastructure
            )
            plan = fault_plan(config)
            rate, seed = config.submit_rate, config.seed
            print(f"submitting {config.jobs} jobs at {rate}/s with {len(plan)} faults (seed {seed})")
            injector.start(plan)
            submissions = submit_all(config, api_urls, [key for _, key in tenants])
            injector.join()
            receiver.set_mode("ok")
            drained, drain_seconds = _drain(direct_url, supervisor, config.drain_timeout)
            supervisor.stop()
        print("errors the services logged (expected while a fault lasts; anything else is a finding):")
        summarize_logs(stack.workdir, levels=("ERROR", "CRITICAL"))
        return _report(
            direct_url,
            submissions,
            receiver.snapshot(),
            endpoints,
            injector,
            supervisor,
            drained,
            drain_seconds,
        )


@contextlib.contextmanager
def _receiver() -> Iterator[ChaosReceiver]:
    receiver = ChaosReceiver(timeout_delay=3.0)  # past WEBHOOK_TIMEOUT_SECONDS
    try:
        yield receiver
    finally:
        receiver.stop()


def _create_tenants(stack: Stack, count: int) -> list[tuple[str, str]]:
    """(tenant id, API key) for each tenant; the stack's own tenant is the first."""
    from service.db import get_engine, session_scope
    from service.settings import get_settings
    from service.tenants.service import create_tenant

    tenants = [(stack.tenant_id, stack.api_key)]
    with session_scope() as session:
        for index in range(1, count):
            tenant, issued = create_tenant(session, f"chaos-{index}", server_secret=get_settings().secret_key)
            tenants.append((tenant.id, issued.full_key))
    get_engine().dispose()
    return tenants


def _create_endpoints(
    api_url: str, tenants: list[tuple[str, str]], receiver: ChaosReceiver
) -> list[Endpoint]:
    """Every tenant subscribes to everything; tenant 0 also has an endpoint for terminal events only."""
    wanted: list[tuple[int, str, list[str]]] = [
        (index, f"/tenant{index}/all", []) for index in range(len(tenants))
    ]
    wanted.append((0, "/tenant0/terminal", TERMINAL_EVENTS))
    endpoints = []
    for index, path, event_types in wanted:
        tenant_id, api_key = tenants[index]
        variables = {"input": {"url": receiver.url + path, "eventTypes": event_types}}
        response = httpx.post(
            f"{api_url}/graphql",
            json={"query": ENDPOINT_MUTATION, "variables": variables},
            headers={"authorization": f"Bearer {api_key}"},
            timeout=30,
        )
        payload = response.json()["data"]["createWebhookEndpoint"]
        assert not payload["userErrors"], payload
        receiver.secrets[path] = payload["secret"]
        endpoints.append(Endpoint(path, tenant_id, event_types))
    return endpoints


def _order_violations(tally: Tally, rank: dict[str, int]) -> int:
    """First arrivals (the receiver keeps them in arrival order) of an event of a job at an endpoint
    that came after a later event of the same job had already arrived there."""
    latest: dict[tuple[str, str], int] = {}
    violations = 0
    for (path, webhook_id), delivery in tally.received.items():
        if delivery.job_id is None or webhook_id not in rank:
            continue
        key = (path, delivery.job_id)
        if rank[webhook_id] < latest.get(key, -1):
            violations += 1
        latest[key] = max(rank[webhook_id], latest.get(key, -1))
    return violations


def _drain(database_url: str, supervisor: Supervisor, timeout: float) -> tuple[bool, float]:
    """Wait until every job is terminal and no delivery is pending; (drained, seconds it took)."""
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(psycopg.OperationalError):
            with psycopg.connect(database_url, connect_timeout=5) as conn:
                open_jobs, pending = conn.execute(
                    "SELECT (SELECT count(*) FROM jobs WHERE status <> ALL(%s)),"
                    " (SELECT count(*) FROM webhook_deliveries WHERE status = 'PENDING')",
                    (list(TERMINAL),),
                ).fetchone() or (1, 1)
            if open_jobs == 0 and pending == 0 and supervisor.all_running():
                return True, time.monotonic() - started
        time.sleep(0.5)
    return False, time.monotonic() - started


def _report(
    database_url: str,
    submissions: Submissions,
    tally: Tally,
    endpoints: list[Endpoint],
    injector: Injector,
    supervisor: Supervisor,
    drained: bool,
    drain_seconds: float,
) -> ChaosReport:
    with psycopg.connect(database_url) as conn:
        jobs = {row[0]: (row[1], row[2]) for row in conn.execute("SELECT id, status, error_code FROM jobs")}
        trail = conn.execute(
            "SELECT tenant_id, job_id, type FROM job_events WHERE type = ANY(%s)", (list(JOB_EVENT_TYPES),)
        ).fetchall()
        given_up = conn.execute("SELECT count(*) FROM webhook_deliveries WHERE status = 'FAILED'").fetchone()
        reruns = conn.execute(
            "SELECT count(*) FROM (SELECT job_id FROM job_events WHERE type = 'job.started'"
            " GROUP BY job_id HAVING count(*) > 1) AS rerun"
        ).fetchone()
        # each job's events in the order the deliverer must keep (its claim orders by created_at, id)
        rank = {
            row[0]: index
            for index, row in enumerate(
                conn.execute("SELECT id FROM webhook_events WHERE job_id IS NOT NULL ORDER BY created_at, id")
            )
        }
    submitted = set(submissions.accepted.values())
    lost = sum(1 for job_id in submitted if jobs.get(job_id, ("missing",))[0] not in TERMINAL)
    statuses = Counter(status for status, _ in jobs.values())
    error_codes = Counter(code for status, code in jobs.values() if status == "FAILED" and code)

    expected: Counter[tuple[str, str, str]] = Counter()
    for endpoint in endpoints:
        for tenant_id, job_id, event_type in trail:
            if tenant_id == endpoint.tenant_id and (
                not endpoint.event_types or event_type in endpoint.event_types
            ):
                expected[(endpoint.path, job_id, event_type)] += 1
    received = Counter((path, d.job_id or "", d.event_type) for (path, _), d in tally.received.items())
    return ChaosReport(
        submitted=len(submitted),
        never_accepted=submissions.never_accepted,
        rejected=submissions.rejected,
        retried=submissions.retried,
        idempotency_violations=submissions.idempotency_violations,
        statuses=statuses,
        error_codes=error_codes,
        lost=lost,
        ran_more_than_once=reruns[0] if reruns else 0,
        # A killed worker's run, or one outliving a Postgres restart longer than the worker waits to
        # record its outcome, is run again; a PgBouncer restart is short enough to wait out.
        runs_interrupted=any(injector.done[kind] for kind in ("worker-kill", "postgres-restart")),
        events_expected=sum(expected.values()),
        events_received=sum((received & expected).values()),
        events_missing=sum((expected - received).values()),
        events_unexpected=sum((received - expected).values()),
        duplicates=tally.duplicates,
        order_violations=_order_violations(tally, rank),
        signature_failures=tally.signature_failures,
        deliveries_given_up=given_up[0] if given_up else 0,
        drain_seconds=drain_seconds,
        drained=drained,
        faults=injector.done,
        faults_skipped=injector.skipped,
        unplanned_exits=supervisor.unplanned_exits,
        receiver_answers=tally.requests,
    )


def fleet_config(config: ChaosConfig, *, pgbouncer: bool, sentinel: bool) -> ChaosConfig:
    """config as several hosts would run it, with a fleet's faults instead of worker and server kills."""
    return dataclasses.replace(
        config,
        apis=2,
        schedulers=2,
        workers=4,
        worker_kills=0,
        redis_restarts=0,
        postgres_restarts=0,
        api_kills=1,
        receiver_windows=1,
        scheduler_kills=2,
        redis_failovers=2 if sentinel else 0,
        pgbouncer_restarts=2 if pgbouncer else 0,
        sentinel=sentinel,
        pgbouncer=pgbouncer,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    defaults = ChaosConfig()
    parser.add_argument("--jobs", type=int, default=defaults.jobs)
    parser.add_argument("--tenants", type=int, default=defaults.tenants)
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--submit-rate", type=float, default=defaults.submit_rate, help="jobs per second")
    parser.add_argument("--worker-kills", type=int, default=defaults.worker_kills)
    parser.add_argument("--redis-restarts", type=int, default=defaults.redis_restarts)
    parser.add_argument("--postgres-restarts", type=int, default=defaults.postgres_restarts)
    parser.add_argument("--api-kills", type=int, default=defaults.api_kills)
    parser.add_argument(
        "--receiver-windows", type=int, default=defaults.receiver_windows, help="of each kind"
    )
    parser.add_argument("--window-seconds", type=float, default=defaults.window_seconds)
    parser.add_argument("--drain-timeout", type=float, default=defaults.drain_timeout)
    parser.add_argument(
        "--fleet",
        action="store_true",
        help="2 APIs, 2 schedulers, 4 workers on Sentinel-watched Redis; faults for a fleet (see above)",
    )
    parser.add_argument("--pgbouncer", action="store_true", help="--fleet: DATABASE_URL through PgBouncer")
    parser.add_argument("--no-sentinel", action="store_true", help="--fleet: one plain Redis, no failover")
    parser.add_argument("--keep", type=Path, help="keep logs in this directory (default: a temporary one)")
    args = parser.parse_args()
    config = ChaosConfig(
        jobs=args.jobs,
        tenants=args.tenants,
        workers=args.workers,
        seed=args.seed,
        submit_rate=args.submit_rate,
        worker_kills=args.worker_kills,
        redis_restarts=args.redis_restarts,
        postgres_restarts=args.postgres_restarts,
        api_kills=args.api_kills,
        receiver_windows=args.receiver_windows,
        window_seconds=args.window_seconds,
        drain_timeout=args.drain_timeout,
    )
    if args.fleet:
        config = fleet_config(config, pgbouncer=args.pgbouncer, sentinel=not args.no_sentinel)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    report = run(config, args.keep)
    print("\n".join(report.lines()))
    print("OK: nothing lost" if report.ok else "FAILED: something was lost or went wrong (see above)")
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
