"""The cost of tracing: mutation throughput and worker jobs/s with spans exported over OTLP to a local
collector-like sink, beside tracing off, in one run (target ratio >= 0.85 for both).

Mutations: two APIs run side by side on the same database and Redis, one tracing and one not, each for
a tenant of its own, and are driven in turn by the same closed-loop client (C requests in flight) in
`--mutation-rounds` short rounds: each round's pair runs seconds apart, so the machine's drift from one
minute to the next (10-20 % here) falls between the rounds rather than inside a pair. With them, each
API's CPU per mutation, steadier than the rates on a busy machine.
Worker jobs: one worker drains 1,000 jobs with tracing off, then one with it on, `--rounds` times.
Each ratio printed is the median of its rounds' ratios, with their range.

    python -m bench.tracing [--seconds 20] [--mutation-rounds 10] [--jobs 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from bench.common import CpuMeter, Stack, UvicornApi, new_tenant, service_stack, spread
from bench.enqueue import closed_loop, speech_body
from bench.jobs import at_work
from tests.servers import ApiProcess

EXPORTERS = ("none", "otlp")
"""Tracing off, then on: what OTEL_TRACES_EXPORTER says."""


def tracing_env(exporter: str, sink_url: str) -> dict[str, str]:
    """The settings of a process tracing to the sink ("otlp") or not at all ("none")."""
    return {
        "OTEL_TRACES_EXPORTER": exporter,
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink_url,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }


@dataclass
class TracedApi:
    """One of the two APIs, with the tenant whose key drives it."""

    process: ApiProcess
    headers: dict[str, str]


@dataclass
class Segment:
    """One API driven for a round's seconds."""

    rate: float
    cpu: float
    """API CPU seconds per mutation."""


async def drive(api: TracedApi, counter: itertools.count[int], seconds: float, concurrency: int) -> Segment:
    """Closed-loop generateSpeech on one API for `seconds`: its rate and CPU per mutation."""
    limits = httpx.Limits(max_connections=concurrency * 4, max_keepalive_connections=0)
    meter = CpuMeter({"api": [api.process.pid]})
    async with httpx.AsyncClient(
        base_url=api.process.url, headers=api.headers, limits=limits, timeout=60
    ) as client:
        meter.start()
        rate, _ = await closed_loop(client, "/graphql", lambda: speech_body(counter), concurrency, seconds)
        return Segment(rate, meter.stop().groups["api"] / rate)


async def alternate(apis: Mapping[str, TracedApi], args: argparse.Namespace) -> list[tuple[Segment, Segment]]:
    """Off then on, `mutation_rounds` times, each for its share of `seconds` (after a second each to
    warm up): the (off, on) pairs."""
    counter = itertools.count()
    off, on = apis["none"], apis["otlp"]
    for api in (off, on):
        await drive(api, counter, 1, args.concurrency)
    share = args.seconds / args.mutation_rounds
    pairs = []
    for _ in range(args.mutation_rounds):
        off_segment = await drive(off, counter, share, args.concurrency)
        on_segment = await drive(on, counter, share, args.concurrency)
        pairs.append((off_segment, on_segment))
    return pairs


def start_traced_api(stack: Stack, exporter: str, sink_url: str, workers: int) -> TracedApi:
    """An API tracing or not, for a tenant of its own (a creation counts its tenant's queued jobs)."""
    process = stack.start_api(workers, env=tracing_env(exporter, sink_url), name=f"api-{exporter}")
    _, api_key = new_tenant(f"tracing {exporter}")
    return TracedApi(process, {**stack.headers, "authorization": f"Bearer {api_key}"})


def jobs_per_second(stack: Stack, exporter: str, sink_url: str, public_url: str, count: int) -> float:
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
    worker = stack.start_worker(public_url, env=tracing_env(exporter, sink_url))
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20, help="mutations per API, over all rounds")
    parser.add_argument("--mutation-rounds", type=int, default=10, help="alternated rounds of mutations")
    parser.add_argument("--jobs", type=int, default=1000, help="per drain (200 take 2 s: too short a window)")
    parser.add_argument("--rounds", type=int, default=3, help="worker drains, off and on in turn")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes per API")
    args = parser.parse_args()
    with service_stack(log_level="WARNING") as stack:
        from service.redis import get_queue

        sink = UvicornApi("bench.otlp_sink:create", stack.env, stack.workdir / "sink.log")
        stack.processes.append(sink)
        sink.start()
        apis = {exporter: start_traced_api(stack, exporter, sink.url, args.workers) for exporter in EXPORTERS}
        mutations = asyncio.run(alternate(apis, args))
        get_queue().empty()  # type: ignore[no-untyped-call]  # the mutations' jobs are not the worker's test
        public_url = apis["none"].process.url
        drains = [
            tuple(jobs_per_second(stack, exporter, sink.url, public_url, args.jobs) for exporter in EXPORTERS)
            for _ in range(args.rounds)
        ]
        exported = httpx.get(f"{sink.url}/stats").json()
    report(mutations, drains, exported["requests"])


def report(mutations: list[tuple[Segment, Segment]], drains: list[tuple[float, ...]], exports: int) -> None:
    off_rate = statistics.median(off.rate for off, _ in mutations)
    on_rate = statistics.median(on.rate for _, on in mutations)
    off_cpu = statistics.median(off.cpu for off, _ in mutations)
    on_cpu = statistics.median(on.cpu for _, on in mutations)
    off_jobs = statistics.median(off for off, _ in drains)
    on_jobs = statistics.median(on for _, on in drains)
    print(f"tracing off: {off_rate:7.1f} mutations/s, {off_jobs:6.1f} jobs/s (one worker at work; medians)")
    print(f"tracing on:  {on_rate:7.1f} mutations/s, {on_jobs:6.1f} jobs/s ({exports} OTLP exports)")
    mutation_ratios = spread([on.rate / off.rate for off, on in mutations])
    job_ratios = spread([on / off for off, on in drains])
    print(f"ratio:       {mutation_ratios} mutations, {job_ratios} jobs  (target >= 0.85)")
    cpu_ratios = spread([off.cpu / on.cpu for off, on in mutations])
    print(
        f"API CPU per mutation: off {off_cpu * 1000:.2f} ms, on {on_cpu * 1000:.2f} ms "
        f"(ratio {cpu_ratios}; steadier than the rates on a busy machine)"
    )


if __name__ == "__main__":
    main()
