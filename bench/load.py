"""Sustained mixed load at a fixed rate: latency, errors, memory growth and whether the workers keep up.

Runs the production processes on a throwaway PostgreSQL and Redis: the API (`service.cli api
--workers N`), M RQ workers and the scheduler. One client issues operations open-loop at a fixed total
rate (each on its schedule, whether or not earlier ones have answered, so latency includes any
queueing), drawn at random in a configurable mix:

- mutation: generateSpeech with a short text and a fresh idempotencyKey;
- query: job(id) of one of the last jobs created;
- subscription: jobUpdates(id) of the newest job over graphql-transport-ws, read until it completes
  at a terminal status (or a cap); its latency is the time to the first message (the snapshot);
- download: GET the downloadUrl of a SUCCEEDED job (served by the API at /downloads/{token}) and read
  the whole body.

After a warm-up at the same rate it reports per operation: count, achieved ops/s, p50/p99/p999 latency
(successes, from the scheduled send time) and errors (HTTP non-2xx, GraphQL errors and userErrors such
as RATE_LIMITED, transport errors, failed subscriptions); the RSS of the API process tree and of the
RQ worker parents after the warm-up and at the end; the jobs created in the window and how many had
SUCCEEDED by its end; machine CPU; and warnings or errors the service processes logged.

    python -m bench.load [--seconds 60] [--rate 12] [--api-workers 2] [--workers 2] [--warmup 5]
                         [--cap 30] [--mix mutation=0.25,query=0.45,subscription=0.1,download=0.2]

At the default rate (3 jobs/s at the default mix) two RQ workers kept up on the 2-core development
machine even while it was busy with other work (their pace was then 4-5 jobs/s). The backlog line shows
whether they kept up, and their pace once new work stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import connect

from bench.common import (
    SPEECH_MUTATION,
    CpuMeter,
    Stack,
    descendants,
    ms,
    percentile,
    service_stack,
    summarize_logs,
)
from bench.subscribers import PROTOCOL, rss_mib
from service.client.settings import TERMINAL
from tests.servers import ServiceProcess

JOB_QUERY = "query Job($id: ID!) { job(id: $id) { id status artifact { downloadUrl byteSize } } }"
UPDATES = (
    "subscription Updates($id: ID!) { jobUpdates(id: $id) { status artifact { downloadUrl byteSize } } }"
)
OPERATIONS = ("mutation", "query", "subscription", "download")
DEFAULT_MIX = "mutation=0.25,query=0.45,subscription=0.1,download=0.2"
RECENT = 50  # queries pick one of the last RECENT jobs created; downloads one of the last RECENT artifacts


class OpError(Exception):
    """An operation's failure, named by its kind (e.g. "HTTP 500", "RATE_LIMITED")."""


@dataclass
class OpStats:
    latencies: list[float] = field(default_factory=list)
    done: list[float] = field(default_factory=list)  # when each success was measured (perf_counter)
    errors: Counter[str] = field(default_factory=Counter)


@dataclass
class Phase:
    """What one run of the schedule (warm-up or measurement) saw."""

    started: float
    stats: dict[str, OpStats]
    created: list[str] = field(default_factory=list)  # job ids from successful mutations
    to_terminal: list[float] = field(default_factory=list)  # subscriptions: scheduled -> complete
    capped: int = 0  # subscriptions still open at the cap
    lag: float = 0.0  # the client's worst delay in issuing an operation on schedule
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def finished(self) -> None:
        """Wait for every operation issued (subscriptions stay open until their job ends or the cap)."""
        await asyncio.gather(*self.tasks)


class Load:
    """The client: issues the mix open-loop and remembers recent jobs and download URLs."""

    def __init__(
        self, client: httpx.AsyncClient, ws_url: str, api_key: str, mix: dict[str, float], cap: float
    ) -> None:
        self.client = client
        self.ws_url = ws_url
        self.api_key = api_key
        self.mix = mix
        self.cap = cap
        self.rng = random.Random(1)
        self.jobs: deque[str] = deque(maxlen=RECENT)
        self.artifacts: deque[tuple[str, int]] = deque(maxlen=RECENT)
        self.operations: dict[str, Callable[[Phase, float], Awaitable[float]]] = {
            name: getattr(self, name) for name in OPERATIONS
        }

    async def run(self, rate: float, seconds: float) -> Phase:
        """Issue rate * seconds operations on schedule; returns once the last one is issued."""
        phase = Phase(started=time.perf_counter(), stats={name: OpStats() for name in self.mix})
        names, weights = list(self.mix), list(self.mix.values())
        for index in range(round(rate * seconds)):
            scheduled = phase.started + index / rate
            await asyncio.sleep(max(scheduled - time.perf_counter(), 0))
            phase.lag = max(phase.lag, time.perf_counter() - scheduled)
            name = self.rng.choices(names, weights)[0]
            phase.tasks.append(asyncio.create_task(self._timed(name, phase, scheduled)))
        return phase

    async def _timed(self, name: str, phase: Phase, scheduled: float) -> None:
        stats = phase.stats[name]
        try:
            latency = await self.operations[name](phase, scheduled)
        except OpError as exc:
            stats.errors[str(exc)] += 1
        except Exception as exc:  # transport errors, malformed answers: counted by type, never fatal
            stats.errors[type(exc).__name__] += 1
        else:
            stats.latencies.append(latency)
            stats.done.append(scheduled + latency)

    async def _graphql(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        response = await self.client.post("/graphql", json={"query": query, "variables": variables})
        if response.status_code != 200:
            raise OpError(f"HTTP {response.status_code}")
        body = response.json()
        if body.get("errors"):
            raise OpError(_error_kind(body["errors"]))
        data: dict[str, Any] = body["data"]
        return data

    def _remember(self, job: dict[str, Any]) -> None:
        if job["status"] == "SUCCEEDED" and job["artifact"]:
            self.artifacts.append((job["artifact"]["downloadUrl"], job["artifact"]["byteSize"]))

    async def mutation(self, phase: Phase, scheduled: float) -> float:
        text = f"Load test sentence {self.rng.randrange(10**6)}."
        variables = {"input": {"text": text, "idempotencyKey": uuid.uuid4().hex}}
        payload = (await self._graphql(SPEECH_MUTATION, variables))["generateSpeech"]
        if payload["userErrors"]:
            raise OpError(payload["userErrors"][0]["code"])
        self.jobs.append(payload["job"]["id"])
        phase.created.append(payload["job"]["id"])
        return time.perf_counter() - scheduled

    async def query(self, phase: Phase, scheduled: float) -> float:  # noqa: ARG002 - every operation's signature
        if not self.jobs:
            raise OpError("no job created yet")
        job = (await self._graphql(JOB_QUERY, {"id": self.rng.choice(self.jobs)}))["job"]
        if job is None:
            raise OpError("job not found")
        self._remember(job)
        return time.perf_counter() - scheduled

    async def download(self, phase: Phase, scheduled: float) -> float:  # noqa: ARG002 - every operation's signature
        if not self.artifacts:
            raise OpError("no SUCCEEDED job yet")
        url, size = self.rng.choice(self.artifacts)
        response = await self.client.get(url)
        if response.status_code != 200:
            raise OpError(f"HTTP {response.status_code}")
        if len(response.content) != size:
            raise OpError("body is not byteSize long")
        return time.perf_counter() - scheduled

    async def subscription(self, phase: Phase, scheduled: float) -> float:
        if not self.jobs:
            raise OpError("no job created yet")
        first: float | None = None
        status = ""
        try:
            async with asyncio.timeout_at(asyncio.get_running_loop().time() + self.cap):
                async with connect(self.ws_url, subprotocols=[PROTOCOL], max_queue=None) as socket:
                    init = {"authorization": f"Bearer {self.api_key}"}
                    await socket.send(json.dumps({"type": "connection_init", "payload": init}))
                    if json.loads(await socket.recv())["type"] != "connection_ack":
                        raise OpError("no connection_ack")
                    subscribe = {"query": UPDATES, "variables": {"id": self.jobs[-1]}}
                    await socket.send(json.dumps({"id": "1", "type": "subscribe", "payload": subscribe}))
                    async for raw in socket:
                        message = json.loads(raw)
                        if message["type"] == "ping":
                            await socket.send(json.dumps({"type": "pong"}))
                            continue
                        if message["type"] == "complete":
                            break
                        job = _update(message)
                        first = time.perf_counter() - scheduled if first is None else first
                        status = job["status"]
                        self._remember(job)
        except TimeoutError:
            if first is None:
                raise OpError("no snapshot within the cap") from None
            phase.capped += 1
            return first
        if first is None or status not in TERMINAL:
            raise OpError("completed before a terminal status")
        phase.to_terminal.append(time.perf_counter() - scheduled)
        return first


def _update(message: dict[str, Any]) -> dict[str, Any]:
    """The job a subscription's `next` message carries; OpError for anything else."""
    if message["type"] != "next":
        raise OpError(f"subscription {message['type']}: {_error_kind(message['payload'])}")
    if message["payload"].get("errors"):
        raise OpError(_error_kind(message["payload"]["errors"]))
    job: dict[str, Any] = message["payload"]["data"]["jobUpdates"]
    return job


def _error_kind(errors: Sequence[dict[str, Any]]) -> str:
    """The first GraphQL error's code (extensions.code), else the start of its message."""
    first = errors[0] if errors else {}
    code = (first.get("extensions") or {}).get("code")
    return str(code or first.get("message", "error"))[:60]


def parse_mix(text: str) -> dict[str, float]:
    """The --mix value ("mutation=0.25,query=0.45,...") as {name: share}, the shares scaled to sum to 1."""
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        if name.strip() not in OPERATIONS:
            raise argparse.ArgumentTypeError(f"unknown operation {name.strip()!r}")
        mix[name.strip()] = float(weight)
    total = sum(mix.values())
    if total <= 0 or min(mix.values()) < 0:
        raise argparse.ArgumentTypeError("weights must be >= 0 and not all 0")
    return {name: weight / total for name, weight in mix.items() if weight > 0}


def tree_rss_mib(pid: int) -> float:
    """VmRSS summed over pid and its live descendants."""
    total = 0.0
    for member in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError):
            total += rss_mib(member)
    return total


def rss(pids: dict[str, list[int]]) -> dict[str, float]:
    """MiB: the API's whole process tree (uvicorn's workers), the RQ workers' parents (no work horses)."""
    return {"api": sum(map(tree_rss_mib, pids["api"])), "workers": sum(map(rss_mib, pids["workers"]))}


def wait_for_workers(count: int, timeout: float = 60) -> None:
    """Until `count` RQ workers have registered (they take seconds to start on a busy machine)."""
    from rq import Worker

    from service.redis import get_redis

    deadline = time.monotonic() + timeout
    while Worker.count(connection=get_redis()) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"fewer than {count} RQ workers registered after {timeout:g} s")
        time.sleep(0.2)


def job_statuses(ids: Sequence[str]) -> Counter[str]:
    """How many of these jobs are in each status."""
    from sqlmodel import col, select

    from service.db import session_scope
    from service.jobs.models import Job

    with session_scope() as session:
        return Counter(str(s) for s in session.exec(select(Job.status).where(col(Job.id).in_(ids))).all())


def queue_waits(ids: Sequence[str]) -> list[float]:
    """Seconds from created to started of those of these jobs that have started."""
    from sqlmodel import col, select

    from service.db import session_scope
    from service.jobs.models import Job

    query = select(Job.created_at, Job.started_at).where(col(Job.id).in_(ids))
    with session_scope() as session:
        rows = session.exec(query).all()
    return [(started - created).total_seconds() for created, started in rows if started is not None]


def backlog(tenant_id: str) -> int:
    """The tenant's jobs not yet at a terminal status."""
    from sqlmodel import col, func, select

    from service.db import session_scope
    from service.jobs.models import TERMINAL_STATUSES, Job

    query = select(func.count()).where(
        col(Job.tenant_id) == tenant_id, col(Job.status).not_in(TERMINAL_STATUSES)
    )
    with session_scope() as session:
        return session.exec(query).one()


def report(phase: Phase, seconds: float) -> None:
    print(
        f"{'operation':<13} {'count':>6} {'ops/s':>7} {'p50':>10} {'p99':>10} {'p999':>10} "
        f"{'errors':>7} {'error rate':>10}"
    )
    issued = failed = 0
    for name, stats in phase.stats.items():
        count, errors = len(stats.latencies), sum(stats.errors.values())
        issued, failed = issued + count + errors, failed + errors
        elapsed = max(max(stats.done, default=0.0) - phase.started, seconds)
        values = stats.latencies
        print(
            f"{name:<13} {count + errors:>6} {count / elapsed:>7.1f} {ms(percentile(values, 0.5)):>10} "
            f"{ms(percentile(values, 0.99)):>10} {ms(percentile(values, 0.999)):>10} "
            f"{errors:>7} {errors / max(count + errors, 1):>10.2%}"
        )
        for kind, times in stats.errors.most_common(5):
            print(f"    {times} x {kind}")
    print(f"overall: {issued} operations, {failed} errors ({failed / max(issued, 1):.2%})")
    if "subscription" in phase.stats:
        print(
            f"subscriptions: {len(phase.to_terminal)} completed at a terminal status, {phase.capped} "
            f"still open at the cap; scheduled -> complete p50 {ms(percentile(phase.to_terminal, 0.5))}, "
            f"p99 {ms(percentile(phase.to_terminal, 0.99))}"
        )
    print(f"load generator: worst delay issuing an operation on schedule {ms(phase.lag)}")


async def measure(stack: Stack, api_url: str, pids: dict[str, list[int]], args: argparse.Namespace) -> None:
    """Warm up, measure at the rate, let the backlog drain, report."""
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    async with httpx.AsyncClient(
        base_url=api_url, headers=stack.headers, limits=limits, timeout=30
    ) as client:
        ws_url = api_url.replace("http://", "ws://") + "/graphql"
        load = Load(client, ws_url, stack.api_key, args.mix, args.cap)
        warmup = await load.run(args.rate, args.warmup)  # its last operations overlap the measurement
        backlog_start = await asyncio.to_thread(backlog, stack.tenant_id)
        rss_start = rss(pids)
        meter = CpuMeter(pids)
        meter.start()
        client_cpu = time.process_time()
        phase = await load.run(args.rate, args.seconds)
        window = meter.stop({"load generator": time.process_time() - client_cpu})
        rss_end = rss(pids)
        statuses = await asyncio.to_thread(job_statuses, phase.created)
        backlog_end = await asyncio.to_thread(backlog, stack.tenant_id)
        drain_started = time.perf_counter()
        while (left := await asyncio.to_thread(backlog, stack.tenant_id)) and (
            time.perf_counter() - drain_started < 60
        ):
            await asyncio.sleep(0.2)
        drained = time.perf_counter() - drain_started
        await warmup.finished()
        await phase.finished()
        waits = await asyncio.to_thread(queue_waits, phase.created)

    mix = ", ".join(f"{name} {share:.0%}" for name, share in args.mix.items())
    print(
        f"{args.rate:g} ops/s for {args.seconds:g} s after {args.warmup:g} s of warm-up ({mix}); "
        f"API --workers {args.api_workers}, {args.workers} RQ worker(s), scheduler"
    )
    report(phase, args.seconds)
    others = "".join(f", {status} {n}" for status, n in statuses.most_common() if status != "SUCCEEDED")
    print(
        f"jobs: {len(phase.created)} created in the window, {statuses['SUCCEEDED']} SUCCEEDED by its end"
        f"{others}; queue wait (created -> started) p50 {ms(percentile(waits, 0.5))}, "
        f"p99 {ms(percentile(waits, 0.99))}, max {ms(max(waits, default=math.nan))}"
    )
    drain = f"{left} still not terminal 60 s later" if left else f"drained in {drained:.1f} s"
    if not left and drained > 1:
        drain += f" ({backlog_end / drained:.1f} jobs/s: the workers' pace with no new work)"
    print(f"backlog (jobs not terminal): {backlog_start} after warm-up, {backlog_end} at the end; {drain}")
    for name, label in (("api", "API (process tree)"), ("workers", "RQ workers (parents)")):
        growth = rss_end[name] - rss_start[name]
        print(f"RSS {label:<20} {rss_start[name]:7.1f} MiB -> {rss_end[name]:7.1f} MiB  ({growth:+.1f} MiB)")
    print(window.describe())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60, help="measured time")
    parser.add_argument("--rate", type=float, default=12, help="operations per second, all kinds together")
    parser.add_argument(
        "--mix", type=parse_mix, default=DEFAULT_MIX, help=f"shares of each operation ({DEFAULT_MIX})"
    )
    parser.add_argument("--api-workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--workers", type=int, default=2, help="RQ worker processes")
    parser.add_argument("--warmup", type=float, default=5, help="seconds of load before measuring")
    parser.add_argument("--cap", type=float, default=30, help="longest a subscription stays open (s)")
    args = parser.parse_args()
    with service_stack(log_level="WARNING") as stack:
        api = stack.start_api(args.api_workers)
        workers = [stack.start_worker(api.url) for _ in range(args.workers)]
        env = {**stack.env, "PUBLIC_BASE_URL": api.url}
        scheduler = ServiceProcess(["scheduler"], env, stack.workdir / "scheduler.log")
        stack.processes.append(scheduler.start())
        wait_for_workers(args.workers)
        pids = {"api": [api.pid], "workers": [worker.pid for worker in workers], "scheduler": [scheduler.pid]}
        asyncio.run(measure(stack, api.url, pids, args))
        summarize_logs(stack.workdir)


if __name__ == "__main__":
    main()
