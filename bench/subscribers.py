"""Live progress at scale: many WebSocket subscribers on one API process, and polling vs subscribing.

1. N subscribers (default 1,000) over graphql-transport-ws on one API process watch running jobs of
   the test worker's slow kind, whose progress message carries the time it was reported: the delay
   from the worker's write to each client's receipt (p50/p99; target p99 < 250 ms), and the API
   process's RSS per open subscription.
2. Following 100 jobs for a fixed time by polling `job(id)` every second vs by subscribing: the
   API process's CPU seconds each way.

    python -m bench.subscribers [--subscribers 1000] [--jobs 4] [--seconds 20] [--follow-seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import httpx
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from bench.common import Stack, ms, percentile, process_tree_cpu, service_stack

UPDATES = "subscription U($id: ID!) { jobUpdates(id: $id) { status message } }"
POLL = "query P($id: ID!) { job(id: $id) { status progress message } }"
PROTOCOL = Subprotocol("graphql-transport-ws")


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


async def subscribe(url: str, api_key: str, job_id: str, delays: list[float], opened: asyncio.Event) -> None:
    async with connect(url, subprotocols=[PROTOCOL], open_timeout=60, max_queue=None) as socket:
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
        opened.set()
        async for raw in socket:
            message = json.loads(raw)
            if message["type"] != "next":
                return
            job = message["payload"]["data"]["jobUpdates"]
            text = job["message"] or ""
            if " at " in text:
                delays.append(time.time() - float(text.rsplit(" at ", 1)[1]))


async def watch_many(stack: Stack, api_url: str, api_pid: int, args: argparse.Namespace) -> None:
    ws_url = api_url.replace("http://", "ws://") + "/graphql"
    rss_before = rss_mib(api_pid)
    job_ids = start_slow_jobs(stack, args.jobs, args.seconds, int(args.seconds * 4))
    delays: list[float] = []
    opened = [asyncio.Event() for _ in range(args.subscribers)]
    tasks = [
        asyncio.create_task(subscribe(ws_url, stack.api_key, job_ids[i % len(job_ids)], delays, opened[i]))
        for i in range(args.subscribers)
    ]
    await asyncio.wait_for(asyncio.gather(*(event.wait() for event in opened)), timeout=120)
    await asyncio.sleep(2)
    rss_open = rss_mib(api_pid)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    failures = [result for result in results if isinstance(result, BaseException)]
    print(
        f"{args.subscribers} subscribers on one API process watching {args.jobs} jobs of {args.seconds:g} s"
    )
    print(
        f"progress write -> client: p50 {ms(percentile(delays, 0.5))}, p99 {ms(percentile(delays, 0.99))}, "
        f"over {len(delays)} updates  (target p99 < 250 ms)"
    )
    per_subscriber = (rss_open - rss_before) * 1024 / args.subscribers
    print(f"API RSS {rss_before:.0f} MiB -> {rss_open:.0f} MiB with them open: {per_subscriber:.1f} KiB each")
    if failures:
        print(f"WARNING: {len(failures)} subscriber(s) failed, e.g. {failures[0]!r}")


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
        delays: list[float] = []
        events = [asyncio.Event() for _ in job_ids]
        ws_url = api_url.replace("http://", "ws://") + "/graphql"
        tasks = [
            asyncio.create_task(subscribe(ws_url, stack.api_key, job_id, delays, event))
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
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=4, help="jobs watched (one per worker, so all run)")
    parser.add_argument("--seconds", type=float, default=20, help="how long each watched job runs")
    parser.add_argument("--follow-seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=4, help="RQ worker processes running the jobs")
    args = parser.parse_args()
    with service_stack(log_level="WARNING") as stack:
        stack.env["MAX_SUBSCRIPTIONS_PER_TENANT"] = str(args.subscribers + 100)  # one tenant watches all
        api = stack.start_api(1)
        for _ in range(args.workers):
            stack.start_worker(api.url)
        asyncio.run(watch_many(stack, api.url, api.pid, args))
        polling = asyncio.run(follow(stack, api.url, api.pid, args.follow_seconds, polling=True))
        subscribing = asyncio.run(follow(stack, api.url, api.pid, args.follow_seconds, polling=False))
        print(
            f"following 100 jobs for {args.follow_seconds:g} s: API CPU {polling:.1f} s polling every "
            f"second, {subscribing:.1f} s subscribed"
        )


if __name__ == "__main__":
    main()
