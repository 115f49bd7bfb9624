"""Job throughput of one worker beside the work alone and a plain RQ worker doing the same work.

All in one run, on one-sentence speech jobs:

1. the work alone: the speech kind's handler in this process, one job after another;
2. plain RQ: the same handler enqueued as RQ jobs, drained by one forking RQ worker in burst mode,
   with the handler's module preloaded as RQ's docs advise;
3. Claimcheck: jobs created through the API (generateSpeech), drained by one `claimcheck worker`;
4. the same with one webhook endpoint subscribed to every event (a fast receiver on loopback),
   between two runs without one (3, and the all-NORMAL run of 5, just after it): its ratio is to the
   mean of the two, so that the machine drifting over the three drains does not count as the
   endpoint's cost (the ratio to 3 alone is printed too);
5. one worker again, on jobs of mixed priorities (HIGH, NORMAL, LOW in turn), beside the same run of
   all NORMAL jobs just before it (the priority path's cost: its queues, order and starvation guard);
6. two `claimcheck worker` processes;
7. four (beyond the cores of a 2-core machine: what is left of its CPU says where the ceiling is);

then each drain's rate once its workers are at work (from the first job's start to the last one's end:
their start-up left out), each drain's CPU left on the machine (what other processes left idle), the
workers' own CPU per job (start-up included; less swayed by what else the machine runs than the
rates), each worker's RSS at start and end, and the ratios (targets: 3 >= 1.0x 2, 4 >= 0.8x 3, 6 >= 1.6x 3,
5 >= 0.95x its all-NORMAL run).
Every drain starts with the queue full and the worker not yet running, and ends when the last job is
done; the worker's start-up is counted, as it would be for RQ. Drains are 2,000 jobs long by default:
each worker's start-up (some 0.6 s of a core, mostly imports) is paid once per drain and per worker,
so in a drain of 300 it was nearly a third of four workers' CPU and an eighth of one worker's time, and the
scaling rows measured start-ups more than the workers at work. On a machine that runs two workers at
140 jobs/s, a drain of 1,000 lasts 7 s, and one run's rounds gave two workers / one from 1.30 to 1.78;
drains of 2,000 gave 1.70 to 1.72. The whole list runs `--rounds` times
(3 by default): a shared 2-core machine swings by 10-20 % from one drain to the next, so the table
gives each row's median drain, and each ratio is the median of the rounds' ratios (each round's pair
run minutes apart at most), with its range. `--rss-jobs N` adds a long run of N jobs through one
worker, sampling its RSS as it goes.

    python -m bench.jobs [--jobs 2000] [--rounds 3] [--rss-jobs 0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.common import (
    REPO_ROOT,
    SPEECH_MUTATION,
    CpuMeter,
    Stack,
    descendants,
    service_stack,
    spread,
)

PLAIN_QUEUE = "bench-plain"
# A plain forking RQ worker as RQ's docs advise running one: the job's module and its library loaded
# once in the parent (`preload`), so each forked horse starts warm; `rq worker --burst` otherwise.
PLAIN_WORKER = """
import sys
from redis import Redis
from rq import Queue, Worker
import bench.jobs
bench.jobs.synthesize("warm up the voice")
connection = Redis.from_url(sys.argv[1])
worker = Worker([Queue(sys.argv[2], connection=connection)], connection=connection)
worker.work(burst=True, logging_level="WARNING")
"""
CREATE_ENDPOINT = """
mutation($url: String!) { createWebhookEndpoint(input: {url: $url}) { endpoint { id } userErrors { code } } }
"""


class _Quiet:
    """A JobContext that records nothing: the work alone."""

    job_id = "job_bench"
    tenant_id = "ten_bench"
    attempt = 1

    def progress(self, fraction: float, message: str | None = None) -> None:  # noqa: ARG002 - ignored
        return None


def synthesize(text: str) -> int:
    """The speech kind's work for one text, its WAV read to the end (what the plain RQ jobs run)."""
    from service.kinds.speech import SpeechInput, generate_speech

    output = generate_speech(_Quiet(), SpeechInput(text=text))
    return sum(len(chunk) for chunk in output.chunks)


def _text(number: int) -> str:
    return f"Hello number {number}, this is one sentence."


@dataclass
class Drain:
    """One drain of a full queue."""

    jobs: int
    seconds: float
    cpu_left: float
    rss_start: float
    rss_end: float
    worker_cpu: float
    """CPU seconds of the worker processes and their horses over the drain, start-up included."""
    at_work: float | None = None
    """Seconds from the first job's start to the last one's end: the drain without the workers'
    start-up (None for plain RQ, which keeps no record of its jobs)."""

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds

    @property
    def rate_at_work(self) -> float | None:
        """Jobs per second once the workers are at work."""
        return (self.jobs - 1) / self.at_work if self.at_work else None

    @property
    def start_up(self) -> float:
        """Seconds from the workers' launch to the first job's start."""
        return self.seconds - (self.at_work or 0.0)

    @property
    def worker_cpu_ms(self) -> float:
        """The workers' CPU per job: what the drain costs them, whatever else the machine runs."""
        return 1000 * self.worker_cpu / self.jobs


def work_alone(count: int) -> float:
    synthesize(_text(0))  # load the voice
    started = time.perf_counter()
    for number in range(count):
        synthesize(_text(number))
    return count / (time.perf_counter() - started)


def plain_rq(stack: Stack, count: int) -> Drain:
    from rq import Queue

    from service.redis import get_redis

    queue = Queue(PLAIN_QUEUE, connection=get_redis())
    for number in range(count):
        queue.enqueue("bench.jobs.synthesize", _text(number), result_ttl=0)  # by name: not __main__
    command = [sys.executable, "-c", PLAIN_WORKER, stack.env["REDIS_URL"], PLAIN_QUEUE]
    meter = CpuMeter({})
    meter.start()
    started = time.perf_counter()
    worker = subprocess.Popen(command, env=stack.env, cwd=REPO_ROOT)
    rss = _Rss(worker.pid)
    cpu = 0.0
    while worker.poll() is None:
        rss.sample()
        cpu = max(cpu, worker_cpu(worker.pid))
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    window = meter.stop()
    if worker.returncode != 0 or queue.count:
        raise RuntimeError(f"rq worker exited {worker.returncode} with {queue.count} jobs left")
    return Drain(count, seconds, window.cores - window.machine_busy, rss.first, rss.last, cpu)


def submit(
    api_url: str, stack: Stack, count: int, start: int, priorities: tuple[str, ...] = ("NORMAL",)
) -> list[str]:
    """Create `count` speech jobs through the API (16 at a time), of these priorities in turn; their ids."""

    async def run() -> list[str]:
        numbers = iter(range(start, start + count))
        ids: list[str] = []
        async with httpx.AsyncClient(base_url=api_url, headers=stack.headers, timeout=60) as client:

            async def one_by_one() -> None:
                for number in numbers:
                    priority = priorities[number % len(priorities)]
                    variables = {"input": {"text": _text(number), "priority": priority}}
                    body = {"query": SPEECH_MUTATION, "variables": variables}
                    payload = (await client.post("/graphql", json=body)).json()["data"]["generateSpeech"]
                    ids.append(payload["job"]["id"])

            await asyncio.gather(*(one_by_one() for _ in range(16)))
        return ids

    return asyncio.run(run())


def claimcheck(
    stack: Stack,
    api_url: str,
    count: int,
    start: int,
    workers: int = 1,
    priorities: tuple[str, ...] = ("NORMAL",),
) -> Drain:
    ids = submit(api_url, stack, count, start, priorities)
    meter = CpuMeter({})
    meter.start()
    launched = datetime.now(UTC)
    processes = [stack.start_worker(api_url) for _ in range(workers)]
    rss = _Rss(*(process.pid for process in processes))
    while _unfinished() > 0:  # the drain's end is read from the jobs' rows: a slow poll costs no accuracy
        rss.sample()
        time.sleep(0.2)
    rss.sample()
    cpu = worker_cpu(*(process.pid for process in processes))
    window = meter.stop()
    for process in processes:
        process.stop()
        stack.processes.remove(process)
    first_start, last_end = run_span(ids)
    cpu_left = window.cores - window.machine_busy
    seconds = (last_end - launched).total_seconds()
    return Drain(count, seconds, cpu_left, rss.first, rss.last, cpu, (last_end - first_start).total_seconds())


def run_span(ids: list[str]) -> tuple[datetime, datetime]:
    """When the first of these jobs started and the last one ended."""
    from sqlalchemy import text

    from service.db import session_scope

    with session_scope() as session:
        statement = text("SELECT min(started_at), max(finished_at) FROM jobs WHERE id = ANY(:ids)")
        first, last = session.execute(statement, {"ids": ids}).one()
    return first, last


def at_work(ids: list[str]) -> float:
    """Seconds from the first of these jobs' start to the last one's end."""
    first, last = run_span(ids)
    return float((last - first).total_seconds())


def _unfinished() -> int:
    from sqlalchemy import text

    from service.db import session_scope

    with session_scope() as session:
        statement = text("SELECT count(*) FROM jobs WHERE status NOT IN ('SUCCEEDED', 'FAILED', 'CANCELED')")
        return int(session.execute(statement).scalar_one())


def worker_cpu(*pids: int) -> float:
    """CPU seconds used so far by worker processes: their own, their reaped children's (RQ's forked
    horses, Claimcheck's replaced ones) and their live descendants' (the running horses)."""
    total = 0.0
    for pid in pids:
        total += cpu_fields(pid, 4)
        total += sum(cpu_fields(child, 2) for child in descendants(pid))
    return total


def cpu_fields(pid: int, count: int) -> float:
    """utime + stime (count 2), with cutime + cstime (count 4), in seconds; 0 for a process gone."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(value) for value in fields[11 : 11 + count]) / os.sysconf("SC_CLK_TCK")
    return 0.0


class _Rss:
    """The resident memory (MiB) of some processes and their descendants, sampled as they run."""

    def __init__(self, *pids: int) -> None:
        self.pids = pids
        self.first = 0.0
        self.last = 0.0

    def sample(self) -> None:
        total = 0
        for pid in (*self.pids, *(child for parent in self.pids for child in descendants(parent))):
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        if total:
            self.last = total / 2**20
            self.first = self.first or self.last


@contextlib.contextmanager
def receiver(stack: Stack) -> Iterator[str]:
    """A fast webhook receiver on loopback (bench/fast_receiver.py); its URL."""
    from bench.common import UvicornApi

    process = UvicornApi("bench.fast_receiver:create", stack.env, stack.workdir / "receiver.log")
    stack.processes.append(process)
    process.start()
    try:
        yield f"{process.url}/hook"
    finally:
        process.stop()
        stack.processes.remove(process)


def long_run(stack: Stack, api_url: str, count: int) -> list[tuple[int, float]]:
    """(jobs done, worker RSS in MiB) every tenth of `count` jobs through one worker."""
    from service.db import session_scope
    from service.jobs.service import create_job

    with session_scope() as session:
        for number in range(count):
            create_job(session, stack.tenant_id, "speech", {"text": _text(number)}, None)
    worker = stack.start_worker(api_url)
    rss = _Rss(worker.pid)
    samples: list[tuple[int, float]] = []
    step = max(count // 10, 1)
    while (left := _unfinished()) > 0:
        done = count - left
        if not samples or done - samples[-1][0] >= step:
            rss.sample()
            samples.append((done, rss.last))
        time.sleep(0.2)
    rss.sample()
    samples.append((count, rss.last))
    worker.stop()
    stack.processes.remove(worker)
    return samples


RATIOS: tuple[tuple[str, str, str | tuple[str, ...], str], ...] = (
    # (label, row, baseline row (or rows, their mean rate), target)
    (
        "Claimcheck / plain RQ",
        "Claimcheck, one worker",
        "plain RQ, one forking worker",
        ">= 1.0, stretch 2.0",
    ),
    (
        "with an endpoint / without",
        "Claimcheck, one worker, one endpoint for every event",
        ("Claimcheck, one worker", "Claimcheck, one worker, all NORMAL (again)"),
        ">= 0.8; without: the drains either side",
    ),
    (
        "two workers / one",
        "Claimcheck, two workers",
        "Claimcheck, one worker",
        ">= 1.6; 2 cores run all of it",
    ),
    (
        "four workers / two",
        "Claimcheck, four workers",
        "Claimcheck, two workers",
        "~1.0 on 2 cores: the ceiling",
    ),
    (
        "mixed priorities / all NORMAL",
        "Claimcheck, one worker, mixed priorities",
        "Claimcheck, one worker, all NORMAL (again)",
        ">= 0.95",
    ),
)


def one_round(stack: Stack, api_url: str, count: int, numbers: Iterator[int]) -> dict[str, Drain]:
    """Every drain once, in the order the docstring gives (the endpoint's run between two without)."""
    rows: dict[str, Drain] = {}
    rows["plain RQ, one forking worker"] = plain_rq(stack, count)
    rows["Claimcheck, one worker"] = claimcheck(stack, api_url, count, next(numbers))
    with receiver(stack) as url:
        created = httpx.post(
            f"{api_url}/graphql",
            headers=stack.headers,
            json={"query": CREATE_ENDPOINT, "variables": {"url": url}},
        ).json()
        assert created["data"]["createWebhookEndpoint"]["userErrors"] == [], created
        rows["Claimcheck, one worker, one endpoint for every event"] = claimcheck(
            stack, api_url, count, next(numbers)
        )
        endpoint = created["data"]["createWebhookEndpoint"]["endpoint"]["id"]
        httpx.post(
            f"{api_url}/graphql",
            headers=stack.headers,
            json={"query": f'mutation {{ deleteWebhookEndpoint(id: "{endpoint}") {{ id }} }}'},
        )
    rows["Claimcheck, one worker, all NORMAL (again)"] = claimcheck(stack, api_url, count, next(numbers))
    rows["Claimcheck, one worker, mixed priorities"] = claimcheck(
        stack, api_url, count, next(numbers), priorities=("HIGH", "NORMAL", "LOW")
    )
    rows["Claimcheck, two workers"] = claimcheck(stack, api_url, count, next(numbers), workers=2)
    rows["Claimcheck, four workers"] = claimcheck(stack, api_url, count, next(numbers), workers=4)
    return rows


def _rate(drains: dict[str, Drain], rows: str | tuple[str, ...]) -> float:
    """A row's rate, or the mean rate of several rows."""
    names = (rows,) if isinstance(rows, str) else rows
    return statistics.fmean(drains[name].rate for name in names)


def _median_drain(drains: list[Drain]) -> Drain:
    """The drain of median rate (the lower middle one for an even count)."""
    ordered = sorted(drains, key=lambda drain: drain.rate)
    return ordered[(len(ordered) - 1) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per drain")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every drain (medians)")
    parser.add_argument("--rss-jobs", type=int, default=0, help="jobs in the long RSS run (0: none)")
    args = parser.parse_args()
    rounds: list[dict[str, Drain]] = []
    alone: list[float] = []
    with service_stack(log_level="WARNING") as stack:
        api = stack.start_api(1)
        numbers = itertools.count(step=args.jobs)
        for _ in range(args.rounds):
            alone.append(work_alone(args.jobs))
            rounds.append(one_round(stack, api.url, args.jobs, numbers))
        samples = long_run(stack, api.url, args.rss_jobs) if args.rss_jobs else []
    rows = {name: _median_drain([drains[name] for drains in rounds]) for name in rounds[0]}
    work = statistics.median(alone)
    header = (
        f"{'jobs/s':>8s} {'per job':>9s} {'CPU left':>9s} {'worker CPU/job':>15s} {'RSS start → end':>18s}"
    )
    print(f"medians of {args.rounds} rounds of {args.jobs} jobs per drain")
    print(f"{'':54s} {header}")
    print(f"{'the work alone, in one process':54s} {work:8.1f} {1000 / work:7.1f}ms")
    for name, drain in rows.items():
        rss = f"{drain.rss_start:6.1f} → {drain.rss_end:6.1f} MiB"
        rate = f"{drain.rate:8.1f} {1000 / drain.rate:7.1f}ms"
        print(f"{name:54s} {rate} {drain.cpu_left:8.2f}c {drain.worker_cpu_ms:13.1f}ms {rss:>18s}")
    for label, row, baseline, target in RATIOS:
        ratios = [drains[row].rate / _rate(drains, baseline) for drains in rounds]
        print(f"{label + ':':31s} {spread(ratios)}  (target {target})")
        if isinstance(baseline, tuple):
            before = [drains[row].rate / drains[baseline[0]].rate for drains in rounds]
            print(f"  to the drain before alone:    {spread(before)}")
        if row == "Claimcheck, two workers" and isinstance(baseline, str):
            at_work_ratios = [
                (drains[row].rate_at_work or 0) / (drains[baseline].rate_at_work or 1) for drains in rounds
            ]
            print(f"  once at work (start-up out):  {spread(at_work_ratios)}")
            start_ups = [
                f"{statistics.median(drains[name].start_up for drains in rounds):.2f} s"
                for name in (baseline, row)
            ]
            print(f"  start-up, launch to first job start: one {start_ups[0]}, two {start_ups[1]}")
    one = rows["Claimcheck, one worker"]
    print(f"Claimcheck per job beyond the work: {1000 / one.rate - 1000 / work:.1f} ms")
    for done, rss_mib in samples:
        print(f"long run: {done:6d} jobs done, worker RSS {rss_mib:6.1f} MiB")


if __name__ == "__main__":
    main()
