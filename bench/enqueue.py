"""generateSpeech mutations per second over real HTTP, beside a bare strawberry mutation on the same server.

Runs the production app (uvicorn, `--workers N`) with a constant-answer mutation mounted at /bare
(bench/bare_app.py), on a throwaway PostgreSQL and Redis. Both endpoints are driven in one run by the
same closed-loop client (C concurrent requests, for D seconds each), in R alternated rounds of D/R
seconds (the machine's speed moves from one minute to the next: each round's pair runs seconds
apart), then generateSpeech is driven open-loop at a fixed rate to report latency percentiles. The
ratio printed is the median of the rounds' ratios, with their range. The target is ratio >= 0.5.
With it, the API's CPU and context switches per request (its process tree, read from /proc): steadier
than the rates on a busy machine, and the context switches show a resolver's thread waiting.

    python -m bench.enqueue [--workers 2] [--concurrency 16] [--seconds 10] [--rounds 3] [--rate 50]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from bench.common import (
    SPEECH_MUTATION,
    CpuMeter,
    Stack,
    context_switches,
    ms,
    percentile,
    service_stack,
    spread,
)

BARE_MUTATION = {"query": "mutation { ping }"}


def speech_body(counter: itertools.count[int]) -> dict[str, Any]:
    return {"query": SPEECH_MUTATION, "variables": {"input": {"text": f"Hello number {next(counter)}."}}}


async def _post(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    response = await client.post(path, json=body)
    elapsed = time.perf_counter() - started
    payload = response.json()
    if response.status_code != 200 or payload.get("errors"):
        raise RuntimeError(f"{path} answered {response.status_code}: {response.text[:300]}")
    return elapsed


async def closed_loop(
    client: httpx.AsyncClient, path: str, body: Callable[[], dict[str, Any]], concurrency: int, seconds: float
) -> tuple[float, list[float]]:
    """Requests per second with `concurrency` requests always in flight, and their latencies."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def loop() -> None:
        while time.perf_counter() < deadline:
            latencies.append(await _post(client, path, body()))

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return len(latencies) / (time.perf_counter() - started), latencies


async def open_loop(
    client: httpx.AsyncClient, path: str, body: Callable[[], dict[str, Any]], rate: float, seconds: float
) -> list[float]:
    """Latencies of requests sent at a fixed rate, whatever the server's pace (no coordinated omission)."""
    started = time.perf_counter()
    tasks = []
    for index in range(int(rate * seconds)):
        await asyncio.sleep(max(started + index / rate - time.perf_counter(), 0))
        tasks.append(asyncio.create_task(_post(client, path, body())))
    return list(await asyncio.gather(*tasks))


@dataclass
class _Pair:
    """One round: the bare mutation, then generateSpeech, each for its share of the seconds."""

    bare_rate: float
    bare_latencies: list[float]
    bare_cpu: float
    """API CPU seconds per request."""
    bare_switches: float
    """The API's context switches per request."""
    speech_rate: float
    speech_latencies: list[float]
    speech_cpu: float
    speech_switches: float


async def _pair(
    client: httpx.AsyncClient, counter: itertools.count[int], api_cpu: CpuMeter, args: argparse.Namespace
) -> _Pair:
    seconds = args.seconds / args.rounds
    api = api_cpu.groups["api"]
    api_cpu.start()
    switches = context_switches(api)
    bare_rate, bare_latencies = await closed_loop(
        client, "/bare", lambda: BARE_MUTATION, args.concurrency, seconds
    )
    bare_cpu = api_cpu.stop().groups["api"] / bare_rate
    bare_switches = (context_switches(api) - switches) / len(bare_latencies)
    api_cpu.start()
    switches = context_switches(api)
    speech_rate, speech_latencies = await closed_loop(
        client, "/graphql", lambda: speech_body(counter), args.concurrency, seconds
    )
    speech_cpu = api_cpu.stop().groups["api"] / speech_rate
    speech_switches = (context_switches(api) - switches) / len(speech_latencies)
    return _Pair(
        bare_rate,
        bare_latencies,
        bare_cpu,
        bare_switches,
        speech_rate,
        speech_latencies,
        speech_cpu,
        speech_switches,
    )


async def measure(stack: Stack, url: str, api_pid: int, args: argparse.Namespace) -> None:
    counter = itertools.count()
    api_cpu = CpuMeter({"api": [api_pid]})
    limits = httpx.Limits(max_connections=args.concurrency * 4, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, headers=stack.headers, limits=limits, timeout=60) as client:
        await closed_loop(client, "/bare", lambda: BARE_MUTATION, args.concurrency, 1)  # warm up
        await closed_loop(client, "/graphql", lambda: speech_body(counter), args.concurrency, 1)
        rounds = [await _pair(client, counter, api_cpu, args) for _ in range(args.rounds)]
        fixed = await open_loop(client, "/graphql", lambda: speech_body(counter), args.rate, args.seconds)

    bare_rate = statistics.median(pair.bare_rate for pair in rounds)
    speech_rate = statistics.median(pair.speech_rate for pair in rounds)
    bare_latencies = [latency for pair in rounds for latency in pair.bare_latencies]
    speech_latencies = [latency for pair in rounds for latency in pair.speech_latencies]
    print(
        f"bare mutation     {bare_rate:8.1f} req/s  p50 {ms(percentile(bare_latencies, 0.5))}  (median round)"
    )
    speech_p50 = ms(percentile(speech_latencies, 0.5))
    print(f"generateSpeech    {speech_rate:8.1f} req/s  p50 {speech_p50}  (median round)")
    rates = [pair.speech_rate / pair.bare_rate for pair in rounds]
    print(f"ratio             {spread(rates)}  (target >= 0.5)")
    bare_cpu = statistics.median(pair.bare_cpu for pair in rounds)
    speech_cpu = statistics.median(pair.speech_cpu for pair in rounds)
    cpu_ratios = [pair.bare_cpu / pair.speech_cpu for pair in rounds]
    print(
        f"API CPU per request: bare {bare_cpu * 1000:.2f} ms, generateSpeech {speech_cpu * 1000:.2f} ms "
        f"(ratio {spread(cpu_ratios)}; steadier than req/s on a busy machine)"
    )
    bare_switches = statistics.median(pair.bare_switches for pair in rounds)
    speech_switches = statistics.median(pair.speech_switches for pair in rounds)
    print(
        f"API context switches per request: bare {bare_switches:.1f}, generateSpeech {speech_switches:.1f} "
        "(a resolver's thread switches at each round trip it waits for)"
    )
    print(
        f"at {args.rate:g} req/s for {args.seconds:g} s: generateSpeech p50 {ms(percentile(fixed, 0.5))}, "
        f"p99 {ms(percentile(fixed, 0.99))}, max {ms(max(fixed))} over {len(fixed)} requests"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10, help="per endpoint, over all rounds")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds (median ratio)")
    parser.add_argument("--rate", type=float, default=50, help="fixed request rate for the latency run")
    args = parser.parse_args()
    with service_stack(log_level="WARNING") as stack:
        api = stack.start_api(args.workers, app="bench.bare_app:create")
        meter = CpuMeter({"api": [api.pid]})
        meter.start()
        asyncio.run(measure(stack, api.url, api.pid, args))
        window = meter.stop()
        print(window.describe())
        print(f"(client, API, PostgreSQL and Redis share this machine's {window.cores} cores)")


if __name__ == "__main__":
    main()
