"""Live progress at scale: many WebSocket subscribers on one and on two API processes, and polling vs
subscribing.

1. A baseline: one subscriber per watched job, on one API process (the feed's own delay).
2. N subscribers (default 1,000) over graphql-transport-ws on one API process watch running jobs of
   the test worker's slow kind, whose progress message carries the time it was reported: the delay
   from the worker's write to each client's receipt (p50/p99; target p99 < 250 ms), and the API
   process's RSS per open subscription.
3. M subscribers (default 5,000) spread over two API processes (target p99 < 500 ms).
4. Following 100 jobs for a fixed time by polling `job(id)` every second vs by subscribing: the
   API process's CPU seconds each way.

Each run opens every subscription first (the jobs wait in the queue: the workers start once all are
open), so every subscriber can hear every progress write; each run prints how many it heard. jobUpdates
is a snapshot stream: a change read together with a later one is sent as the later state alone, so a
job's last step, written just before SUCCEEDED, may reach its subscribers only as SUCCEEDED (those
are counted apart). The clients run in --clients processes of their own.
The API processes serve metrics, and the script reads how many results the subscription groups
rendered against how many they sent: one rendering per change and group, not one per subscriber.

    python -m bench.subscribers [--subscribers 1000] [--two-process-subscribers 5000] [--jobs 4]
                                [--seconds 20] [--updates-per-second 2] [--follow-seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import multiprocessing.synchronize
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from bench.common import Stack, ms, percentile, process_tree_cpu, service_stack
from service.embedded import free_port
from tests.servers import ApiProcess, ServiceProcess

UPDATES = "subscription U($id: ID!) { jobUpdates(id: $id) { status message } }"
POLL = "query P($id: ID!) { job(id: $id) { status progress message } }"
PROTOCOL = Subprotocol("graphql-transport-ws")
RENDERS = "claimcheck_subscription_renders_total"
RECIPIENTS = "claimcheck_subscription_recipients_total"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_slow_jobs(stack: Stack, count: int, seconds: float, steps: int) -> list[str]:
    from service.db import session_scope
    from service.jobs.service import create_job

    ids = []
    with session_scope() as session:
        for _ in range(count):
            job = create_job(
                session, stack.tenant_id, "test-slow", {"seconds": seconds, "steps": steps}, None
            )
            ids.append(job.id)
    return ids


@dataclass
class Heard:
    """What one client process's subscribers heard of their jobs' progress writes."""

    delays: list[float] = field(default_factory=list)
    """Write -> receipt, one per progress write heard."""
    missed: int = 0
    """Progress writes a subscriber never heard, but for a job's last one, heard as SUCCEEDED."""
    last_in_final: int = 0
    """A job's last progress write, heard only in the SUCCEEDED state that followed at once."""
    failed: int = 0
    """Subscriptions that failed."""


async def subscribe(url: str, api_key: str, job_id: str, heard: Heard, opened: asyncio.Event) -> None:
    async with connect(url, subprotocols=[PROTOCOL], open_timeout=120, max_queue=None) as socket:
        await socket.send(
            json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {api_key}"}})
        )
        await socket.recv()
        subscribe_message = {
            "id": "1",
            "type": "subscribe",
            "payload": {"query": UPDATES, "variables": {"id": job_id}},
        }
        await socket.send(json.dumps(subscribe_message))
        steps_heard: set[int] = set()
        steps = 0
        async for raw in socket:
            opened.set()  # the API has answered the subscription: it is a member of its group
            message = json.loads(raw)
            if message["type"] != "next":
                break
            job = message["payload"]["data"]["jobUpdates"]
            text = job["message"] or ""
            if " at " in text and job["status"] == "RUNNING":  # "step 3 of 40 at <unix time>"
                heard.delays.append(time.time() - float(text.rsplit(" at ", 1)[1]))
                step, _, of = text.removeprefix("step ").partition(" at ")[0].partition(" of ")
                steps_heard.add(int(step))
                steps = int(of)
            if job["status"] == "SUCCEEDED" and steps:
                missing = set(range(1, steps + 1)) - steps_heard
                heard.last_in_final += steps in missing
                heard.missed += len(missing - {steps})


@dataclass(frozen=True)
class ClientShare:
    """What one client process opens: subscriptions (api url, job id), spread over the APIs."""

    api_key: str
    targets: list[tuple[str, str]]


_opened: multiprocessing.synchronize.Barrier | None = None
"""In a client process: where every client and the script meet once all subscriptions are open."""


def _start_client(opened: multiprocessing.synchronize.Barrier) -> None:
    global _opened
    _opened = opened


def _client(share: ClientShare) -> Heard:
    """A client process: open every subscription of its share, wait at the barrier (all open), then
    collect delays until the jobs end."""
    opened = _opened
    assert opened is not None

    async def run() -> Heard:
        heard = Heard()
        events = [asyncio.Event() for _ in share.targets]
        tasks = [
            asyncio.create_task(subscribe(url, share.api_key, job_id, heard, event))
            for (url, job_id), event in zip(share.targets, events, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in events)), timeout=600)
        await asyncio.to_thread(opened.wait)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        heard.failed = sum(isinstance(result, BaseException) for result in results)
        return heard

    return asyncio.run(run())


def scrape(metrics_url: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in httpx.get(metrics_url, timeout=10).text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in (RENDERS, RECIPIENTS):
            found[name] = found.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return found


@dataclass
class Api:
    process: ApiProcess
    metrics_url: str

    @property
    def ws_url(self) -> str:
        return self.process.url.replace("http://", "ws://") + "/graphql"


@contextlib.contextmanager
def apis(stack: Stack, count: int) -> Iterator[list[Api]]:
    """`count` API processes (one uvicorn worker each, as in production behind a balancer)."""
    started = []
    try:
        for _ in range(count):
            port = free_port()
            process = ApiProcess({**stack.env, "METRICS_PORT": str(port)}, stack.workdir / f"api-{port}.log")
            process.env["PUBLIC_BASE_URL"] = process.url
            process.start(timeout=60)
            started.append(Api(process, f"http://127.0.0.1:{port}/metrics"))
        yield started
    finally:
        for api in started:
            api.process.stop()


@dataclass
class RunResult:
    delays: list[float]
    expected: int
    """Progress writes times their subscribers."""
    missed: int
    last_in_final: int
    failed: int
    rss_before: list[float]
    rss_open: list[float]
    renders: float
    recipients: float


def watch_many(stack: Stack, servers: list[Api], subscribers: int, args: argparse.Namespace) -> RunResult:
    """`subscribers` subscriptions spread evenly over the servers and the jobs; workers start once all
    are open."""
    rss_before = [rss_mib(api.process.pid) for api in servers]
    before = [scrape(api.metrics_url) for api in servers]
    steps = max(int(args.seconds * args.updates_per_second), 1)
    job_ids = start_slow_jobs(stack, args.jobs, args.seconds, steps)
    targets = [(servers[i % len(servers)].ws_url, job_ids[i % len(job_ids)]) for i in range(subscribers)]
    clients = max(min(args.clients, subscribers), 1)
    shares = [ClientShare(stack.api_key, targets[index::clients]) for index in range(clients)]
    context = multiprocessing.get_context("spawn")
    opened = context.Barrier(clients + 1)
    workers: list[ServiceProcess] = []
    with context.Pool(clients, initializer=_start_client, initargs=(opened,)) as pool:
        pending = pool.map_async(_client, shares)
        opened.wait(timeout=900)
        time.sleep(2)  # the last subscribe messages reach the API
        rss_open = [rss_mib(api.process.pid) for api in servers]
        workers = [stack.start_worker(servers[0].process.url) for _ in range(args.workers)]
        try:
            results = pending.get(timeout=args.seconds * 10 + 300)
        finally:
            for worker in workers:
                worker.stop()
                stack.processes.remove(worker)
    after = [scrape(api.metrics_url) for api in servers]

    def grown(name: str) -> float:
        return sum(a.get(name, 0) - b.get(name, 0) for a, b in zip(after, before, strict=True))

    heard: list[Heard] = results
    return RunResult(
        delays=[delay for client in heard for delay in client.delays],
        expected=subscribers * steps,
        missed=sum(client.missed for client in heard),
        last_in_final=sum(client.last_in_final for client in heard),
        failed=sum(client.failed for client in heard),
        rss_before=rss_before,
        rss_open=rss_open,
        renders=sum(a.get(RENDERS, 0) - b.get(RENDERS, 0) for a, b in zip(after, before, strict=True)),
        recipients=sum(
            a.get(RECIPIENTS, 0) - b.get(RECIPIENTS, 0) for a, b in zip(after, before, strict=True)
        ),
    )


def report(
    title: str, result: RunResult, subscribers: int, target_ms: float, baseline: RunResult | None
) -> None:
    p50, p99 = percentile(result.delays, 0.5), percentile(result.delays, 0.99)
    print(title)
    ratio = ""
    if baseline is not None:
        ratio = f"; p99 {p99 / percentile(baseline.delays, 0.99):.1f}x the baseline's"
    print(
        f"  progress write -> client: p50 {ms(p50)}, p99 {ms(p99)} over {len(result.delays)} updates "
        f"(target p99 < {target_ms:g} ms: {'met' if p99 * 1000 < target_ms else 'MISSED'}){ratio}"
    )
    grown = sum(result.rss_open) - sum(result.rss_before)
    rss = ", ".join(
        f"{before:.0f} -> {open_:.0f} MiB"
        for before, open_ in zip(result.rss_before, result.rss_open, strict=True)
    )
    print(
        f"  heard {len(result.delays)} of {result.expected} progress writes; of those missing, "
        f"{result.last_in_final} were a job's last step, heard only as the SUCCEEDED state that followed "
        f"it (jobUpdates sends the newest state), {result.missed} others"
    )
    print(f"  API RSS {rss} with them open: {grown * 1024 / subscribers:.1f} KiB per subscriber")
    if result.renders:
        print(
            f"  results rendered {result.renders:.0f}, sent {result.recipients:.0f}: "
            f"{result.recipients / result.renders:.0f} subscribers per rendering"
        )
    if result.failed:
        print(f"  WARNING: {result.failed} subscriber(s) failed")


async def follow(stack: Stack, api_url: str, api_pid: int, seconds: float, *, polling: bool) -> float:
    """API CPU seconds to follow 100 jobs for `seconds`, by polling every second or by subscribing."""
    job_ids = start_slow_jobs(stack, 100, seconds, int(seconds))
    before = process_tree_cpu([api_pid])
    deadline = time.monotonic() + seconds
    if polling:
        async with httpx.AsyncClient(base_url=api_url, headers=stack.headers, timeout=30) as client:

            async def poll(job_id: str) -> None:
                while time.monotonic() < deadline:
                    await client.post("/graphql", json={"query": POLL, "variables": {"id": job_id}})
                    await asyncio.sleep(1)

            await asyncio.gather(*(poll(job_id) for job_id in job_ids))
    else:
        heard = Heard()
        events = [asyncio.Event() for _ in job_ids]
        ws_url = api_url.replace("http://", "ws://") + "/graphql"
        tasks = [
            asyncio.create_task(subscribe(ws_url, stack.api_key, job_id, heard, event))
            for job_id, event in zip(job_ids, events, strict=True)
        ]
        await asyncio.sleep(max(deadline - time.monotonic(), 0))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return process_tree_cpu([api_pid]) - before


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=1000, help="on one API process")
    parser.add_argument("--two-process-subscribers", type=int, default=5000, help="over two (0: skip)")
    parser.add_argument("--jobs", type=int, default=4, help="jobs watched (one per worker, so all run)")
    parser.add_argument("--seconds", type=float, default=20, help="how long each watched job runs")
    parser.add_argument("--updates-per-second", type=float, default=2, help="progress writes per job")
    parser.add_argument("--follow-seconds", type=float, default=60, help="polling vs subscribing (0: skip)")
    parser.add_argument("--workers", type=int, default=4, help="RQ worker processes running the jobs")
    parser.add_argument("--clients", type=int, default=2, help="client processes holding the subscriptions")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    with service_stack(log_level="WARNING") as stack:
        total = max(args.subscribers, args.two_process_subscribers)
        stack.env["MAX_SUBSCRIPTIONS_PER_TENANT"] = str(total + 100)  # one tenant watches all
        with apis(stack, 1) as one:
            baseline = watch_many(stack, one, args.jobs, args)
            report(
                f"baseline: {args.jobs} subscribers (one per job), one API process",
                baseline,
                args.jobs,
                250,
                None,
            )
            result = watch_many(stack, one, args.subscribers, args)
            title = (
                f"{args.subscribers} subscribers on one API process, {args.jobs} jobs of {args.seconds:g} s"
            )
            report(title, result, args.subscribers, 250, baseline)
        if args.two_process_subscribers:
            with apis(stack, 2) as two:
                result = watch_many(stack, two, args.two_process_subscribers, args)
                title = f"{args.two_process_subscribers} subscribers over two API processes"
                report(title, result, args.two_process_subscribers, 500, baseline)
        if args.follow_seconds:
            with apis(stack, 1) as one:
                for _ in range(args.workers):
                    stack.start_worker(one[0].process.url)
                url, pid = one[0].process.url, one[0].process.pid
                polling = asyncio.run(follow(stack, url, pid, args.follow_seconds, polling=True))
                subscribing = asyncio.run(follow(stack, url, pid, args.follow_seconds, polling=False))
            print(
                f"following 100 jobs for {args.follow_seconds:g} s: API CPU {polling:.1f} s polling every "
                f"second, {subscribing:.1f} s subscribed"
            )


if __name__ == "__main__":
    main()
