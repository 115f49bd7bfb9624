"""generateSpeech mutations per second over real HTTP, beside a bare strawberry mutation on the same server.

Runs the production app (uvicorn, `--workers N`) with a constant-answer mutation mounted at /bare
(bench/bare_app.py), on a throwaway PostgreSQL and Redis. Both endpoints are driven in one run by the
same closed-loop client (C concurrent requests, for D seconds each), then generateSpeech is driven
open-loop at a fixed rate to report latency percentiles. The target is ratio >= 0.5.

    python -m bench.enqueue [--workers 2] [--concurrency 16] [--seconds 10] [--rate 50]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any

import httpx

from bench.common import SPEECH_MUTATION, CpuMeter, Stack, ms, percentile, service_stack

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


async def measure(stack: Stack, url: str, api_pid: int, args: argparse.Namespace) -> None:
    counter = itertools.count()
    api_cpu = CpuMeter({"api": [api_pid]})
    limits = httpx.Limits(max_connections=args.concurrency * 4, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, headers=stack.headers, limits=limits, timeout=60) as client:
        await closed_loop(client, "/bare", lambda: BARE_MUTATION, args.concurrency, 1)  # warm up
        await closed_loop(client, "/graphql", lambda: speech_body(counter), args.concurrency, 1)
        api_cpu.start()
        bare_rate, bare_latencies = await closed_loop(
            client, "/bare", lambda: BARE_MUTATION, args.concurrency, args.seconds
        )
        bare_cpu = api_cpu.stop().groups["api"] / bare_rate
        api_cpu.start()
        speech_rate, speech_latencies = await closed_loop(
            client, "/graphql", lambda: speech_body(counter), args.concurrency, args.seconds
        )
        speech_cpu = api_cpu.stop().groups["api"] / speech_rate
        fixed = await open_loop(client, "/graphql", lambda: speech_body(counter), args.rate, args.seconds)

    print(f"bare mutation     {bare_rate:8.1f} req/s  p50 {ms(percentile(bare_latencies, 0.5))}")
    print(f"generateSpeech    {speech_rate:8.1f} req/s  p50 {ms(percentile(speech_latencies, 0.5))}")
    print(f"ratio             {speech_rate / bare_rate:8.2f}  (target >= 0.5)")
    print(
        f"API CPU per request: bare {bare_cpu * 1000:.2f} ms, generateSpeech {speech_cpu * 1000:.2f} ms "
        f"(ratio {bare_cpu / speech_cpu:.2f}; steadier than req/s on a busy machine)"
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
    parser.add_argument("--seconds", type=float, default=10)
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
