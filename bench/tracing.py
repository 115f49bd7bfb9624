"""The cost of tracing: mutation throughput and worker jobs/s (once at work) with spans exported over
OTLP to a local collector-like sink, beside tracing off, in one run (target ratio >= 0.85 for both).
Off and on run in turn `--rounds` times (3 by default; the machine's speed moves from one minute to
the next): the ratios printed are the medians of the rounds' ratios, with their range.

    python -m bench.tracing [--seconds 10] [--jobs 1000] [--concurrency 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import time

import httpx

from bench.common import Stack, UvicornApi, new_tenant, service_stack, spread
from bench.enqueue import closed_loop, speech_body
from bench.jobs import at_work


def jobs_per_second(stack: Stack, public_url: str, count: int) -> float:
    """One worker's rate over `count` one-sentence speech jobs committed up front, once at work (from
    the first job's start to the last one's end: the worker's start-up, about a second of the few
    the drain takes, is not what tracing costs per job and swings the ratio most)."""
    from sqlalchemy import func, select
    from sqlmodel import col

    from service.db import session_scope
    from service.jobs.models import Job
    from service.jobs.service import create_job

    with session_scope() as session:
        ids = [
            create_job(session, stack.tenant_id, "speech", {"text": f"Job {i}."}, None).id
            for i in range(count)
        ]
    worker = stack.start_worker(public_url)
    while True:
        with session_scope() as session:
            succeeded = col(Job.id).in_(ids) & (col(Job.status) == "SUCCEEDED")
            done = session.execute(select(func.count()).select_from(Job).where(succeeded)).scalar_one()
        if done >= count:
            break
        time.sleep(0.05)
    worker.stop()
    stack.processes.remove(worker)
    return (count - 1) / at_work(ids)


def measure(stack: Stack, args: argparse.Namespace, exporter: str, sink_url: str) -> tuple[float, float]:
    from service.redis import get_queue

    stack.env.update(
        OTEL_TRACES_EXPORTER=exporter,
        OTEL_EXPORTER_OTLP_ENDPOINT=sink_url,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_BSP_SCHEDULE_DELAY="200",
    )
    api = stack.start_api(2)
    counter = itertools.count()
    # A tenant of its own: the run before left its jobs queued, and a creation counts the tenant's.
    _, api_key = new_tenant(f"tracing {exporter}")
    headers = {**stack.headers, "authorization": f"Bearer {api_key}"}

    async def mutations() -> float:
        limits = httpx.Limits(max_connections=args.concurrency * 4, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=api.url, headers=headers, limits=limits, timeout=60) as client:
            await closed_loop(client, "/graphql", lambda: speech_body(counter), args.concurrency, 1)
            rate, _ = await closed_loop(
                client, "/graphql", lambda: speech_body(counter), args.concurrency, args.seconds
            )
            return rate

    mutation_rate = asyncio.run(mutations())
    get_queue().empty()  # type: ignore[no-untyped-call]  # the mutations' jobs are not the worker's test
    job_rate = jobs_per_second(stack, api.url, args.jobs)
    api.stop()
    stack.processes.remove(api)
    return mutation_rate, job_rate


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--jobs", type=int, default=1000, help="per drain (200 take 2 s: too short a window)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="off and on in turn, this many times")
    args = parser.parse_args()
    with service_stack(log_level="WARNING") as stack:
        sink = UvicornApi("bench.otlp_sink:create", stack.env, stack.workdir / "sink.log")
        stack.processes.append(sink)
        sink.start()
        pairs = [
            (measure(stack, args, "none", sink.url), measure(stack, args, "otlp", sink.url))
            for _ in range(args.rounds)
        ]
        exported = httpx.get(f"{sink.url}/stats").json()
    off_mutations = statistics.median(off[0] for off, _ in pairs)
    off_jobs = statistics.median(off[1] for off, _ in pairs)
    on_mutations = statistics.median(on[0] for _, on in pairs)
    on_jobs = statistics.median(on[1] for _, on in pairs)
    print(
        f"tracing off: {off_mutations:7.1f} mutations/s, {off_jobs:6.1f} jobs/s (one worker at work; medians)"
    )
    exports = exported["requests"]
    print(f"tracing on:  {on_mutations:7.1f} mutations/s, {on_jobs:6.1f} jobs/s ({exports} OTLP exports)")
    mutations = spread([on[0] / off[0] for off, on in pairs])
    jobs = spread([on[1] / off[1] for off, on in pairs])
    print(f"ratio:       {mutations} mutations, {jobs} jobs  (target >= 0.85)")


if __name__ == "__main__":
    main()
