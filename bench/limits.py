"""Tenancy limits: what the rate limiter costs, and whether a busy tenant starves a quiet one.

1. Rate-limit check cost: the GCRA Lua script alone, and the whole per-mutation check (the tenant's
   limits from Postgres, then the script), each called N times in this process: p50/p99 per check.
2. generateSpeech mutations per second with limits on vs off in one run: two API processes on the
   same database and Redis, RATE_LIMITS_ENABLED true and false (a plan roomy enough never to refuse),
   driven alternately by the same closed-loop client. Target: on / off >= 0.9.
3. Fairness: tenant A (max_running 2) submits 1,000 slow jobs, then tenant B submits 10; W workers and
   the scheduler run. Reports how long B's jobs waited to start, in seconds and in A-job durations.

    python -m bench.limits [--checks 5000] [--workers 2] [--concurrency 16] [--seconds 5]
                           [--a-jobs 1000] [--b-jobs 10] [--job-seconds 0.5] [--job-workers 4]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from typing import Any

import httpx

from bench.common import Stack, ms, percentile, service_stack
from bench.enqueue import closed_loop, speech_body
from tests.servers import ApiProcess, ServiceProcess


def check_cost(stack: Stack, checks: int) -> None:
    from service.db import get_engine, session_scope
    from service.plans import Limits
    from service.tenants.limits import get_rate_limiter
    from service.tenants.service import check_rate

    limiter = get_rate_limiter()
    roomy = Limits(
        mutations_per_minute=10**9,
        burst=10**6,
        max_running=1,
        max_queued=1,
        max_text_chars=1,
        max_webhook_endpoints=1,
        queries_per_minute=10**9,
        query_burst=10**6,
    )
    script: list[float] = []
    for _ in range(checks):
        started = time.perf_counter()
        limiter.check(stack.tenant_id, roomy)
        script.append(time.perf_counter() - started)
    whole: list[float] = []
    with session_scope() as session:
        for _ in range(checks):
            started = time.perf_counter()
            check_rate(session, stack.tenant_id)
            whole.append(time.perf_counter() - started)
    get_engine().dispose()
    for name, values in (("GCRA script (Redis)", script), ("limits + script", whole)):
        print(
            f"rate-limit check, {name:20s} p50 {ms(percentile(values, 0.5))}  "
            f"p99 {ms(percentile(values, 0.99))}  over {len(values)} checks"
        )


def _start_api(stack: Stack, workers: int, **extra: str) -> ApiProcess:
    name = "-".join(f"{k}-{v}" for k, v in extra.items()).lower()
    process = ApiProcess({**stack.env, **extra}, stack.workdir / f"api-{name}.log")
    process.args += ["--workers", str(workers)]
    process.env["PUBLIC_BASE_URL"] = process.url
    stack.processes.append(process)
    process.start(timeout=60)
    return process


async def _throughput(stack: Stack, urls: dict[str, str], concurrency: int, seconds: float) -> None:
    counter = itertools.count()
    rates: dict[str, list[float]] = {name: [] for name in urls}
    limits = httpx.Limits(max_connections=concurrency * 4, max_keepalive_connections=0)
    clients = {
        name: httpx.AsyncClient(base_url=url, headers=stack.headers, limits=limits, timeout=60)
        for name, url in urls.items()
    }
    try:
        for client in clients.values():  # warm up
            await closed_loop(client, "/graphql", lambda: speech_body(counter), concurrency, 1)
        for _ in range(2):  # alternate, so drift (a growing jobs table) hits both alike
            for name, client in clients.items():
                rate, _ = await closed_loop(
                    client, "/graphql", lambda: speech_body(counter), concurrency, seconds
                )
                rates[name].append(rate)
    finally:
        for client in clients.values():
            await client.aclose()
    mean = {name: sum(values) / len(values) for name, values in rates.items()}
    for name, values in rates.items():
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"generateSpeech, limits {name:3s} {mean[name]:8.1f} req/s  (runs: {runs})")
    print(f"ratio on / off           {mean['on'] / mean['off']:8.2f}  (target >= 0.9)")


def fairness(stack: Stack, a_jobs: int, b_jobs: int, job_seconds: float, job_workers: int, url: str) -> None:
    from sqlalchemy import delete
    from sqlmodel import col, select

    from service.db import get_engine, session_scope
    from service.jobs.models import Job
    from service.jobs.service import create_job
    from service.redis import get_queue
    from service.settings import get_settings
    from service.tenants.service import create_tenant

    secret = get_settings().secret_key
    with session_scope() as session:  # the throughput run's jobs are not part of this picture
        session.execute(delete(Job).where(col(Job.tenant_id) == stack.tenant_id))
    get_queue().empty()  # type: ignore[no-untyped-call]
    with session_scope() as session:
        a, _ = create_tenant(session, "busy A", server_secret=secret)
        b, _ = create_tenant(session, "quiet B", server_secret=secret)
        a.limits = {"max_running": 2}
        b.limits = {"max_running": 2}
        session.add_all([a, b])
    a_id, b_id = a.id, b.id
    env = {**stack.env, "PUBLIC_BASE_URL": url}
    for n in range(job_workers):
        process = ServiceProcess(["worker", "--queues", "jobs"], env, stack.workdir / f"worker-{n}.log")
        stack.processes.append(process.start())
    scheduler = ServiceProcess(["scheduler"], env, stack.workdir / "scheduler.log")
    stack.processes.append(scheduler.start())
    time.sleep(3)  # workers up
    params: dict[str, Any] = {"seconds": job_seconds, "steps": 1}
    started = time.perf_counter()
    for start in range(0, a_jobs, 100):
        with session_scope() as session:  # committed (and enqueued) 100 at a time
            for _ in range(min(100, a_jobs - start)):
                create_job(session, a_id, "test-slow", params, None)
    submitted_a = time.perf_counter() - started
    with session_scope() as session:
        b_ids = [create_job(session, b_id, "test-slow", params, None).id for _ in range(b_jobs)]
    print(f"fairness: A submitted {a_jobs} jobs in {submitted_a:.1f} s, then B submitted {b_jobs}")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        with session_scope() as session:
            rows = list(session.exec(select(Job).where(col(Job.id).in_(b_ids))))
        if all(row.started_at is not None for row in rows):
            break
        time.sleep(0.2)
    with session_scope() as session:
        b_rows = list(session.exec(select(Job).where(col(Job.id).in_(b_ids))))
        a_done = list(
            session.exec(
                select(Job).where(Job.tenant_id == a_id, col(Job.finished_at).is_not(None)).limit(1000)
            )
        )
    waits = [(row.started_at - row.created_at).total_seconds() for row in b_rows if row.started_at]
    durations = [
        (row.finished_at - row.started_at).total_seconds()
        for row in a_done
        if row.finished_at and row.started_at
    ]
    a_job = sum(durations) / len(durations) if durations else job_seconds
    print(
        f"fairness: B's first job started after {min(waits, default=float('nan')):.2f} s "
        f"({min(waits, default=float('nan')) / a_job:.1f} A-job durations); "
        f"B's {len(waits)}/{b_jobs} jobs started after p50 {percentile(waits, 0.5):.2f} s, "
        f"max {max(waits, default=float('nan')):.2f} s; one A job takes {a_job:.2f} s, so B waited "
        f"{max(waits, default=float('nan')) / a_job:.1f} A-job durations "
        f"(A finished {len(a_done)} jobs meanwhile; "
        f"{job_workers} workers, A and B max_running 2)"
    )
    get_engine().dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checks", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes per API")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--a-jobs", type=int, default=1000)
    parser.add_argument("--b-jobs", type=int, default=10)
    parser.add_argument("--job-seconds", type=float, default=0.5)
    parser.add_argument("--job-workers", type=int, default=4)
    args = parser.parse_args()
    with service_stack(log_level="WARNING") as stack:
        check_cost(stack, args.checks)
        on = _start_api(stack, args.workers, RATE_LIMITS_ENABLED="true")
        off = _start_api(stack, args.workers, RATE_LIMITS_ENABLED="false")
        asyncio.run(_throughput(stack, {"off": off.url, "on": on.url}, args.concurrency, args.seconds))
        off.stop()
        fairness(stack, args.a_jobs, args.b_jobs, args.job_seconds, args.job_workers, on.url)


if __name__ == "__main__":
    main()
