"""Webhook deliveries per second to a fast local receiver, beside a raw httpx loop; and delivery latency.

1. Throughput: N `webhook.test` events are committed for one endpoint, then a deliverer process
   (`claimcheck worker --queues webhooks`) starts and sends them; the rate counts until the receiver
   has them all. In the same run, a bare `httpx.AsyncClient` posts the same signed bodies to the same
   receiver with the same concurrency (the per-endpoint in-flight cap). Targets: ratio >= 0.5,
   >= 500 deliveries/s.
2. Latency: with the deliverer idle and waiting, events are committed one per transaction (as a job
   transition commits them) at a fixed rate; the receiver records arrival time minus the event's
   timestamp. Target: p50 < 50 ms.

    python -m bench.deliveries [--events 5000] [--latency-events 200] [--rate 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import httpx

from bench.common import CpuMeter, Stack, UvicornApi, ms, percentile, service_stack
from tests.servers import ServiceProcess


def publish_tests(tenant_id: str, endpoint_id: str, count: int) -> None:
    """`count` webhook.test events for the endpoint, committed in batches."""
    from service.db import session_scope
    from service.webhooks.service import publish

    for start in range(0, count, 500):
        with session_scope() as session:
            for index in range(start, min(start + 500, count)):
                data = {"endpoint": {"id": endpoint_id}, "message": f"bench event {index}"}
                publish(session, tenant_id, "webhook.test", data, endpoint_ids=[endpoint_id])


def pending(endpoint_id: str) -> int:
    from sqlalchemy import text

    from service.db import session_scope

    with session_scope() as session:
        query = text("SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = :e AND status = 'PENDING'")
        return int(session.execute(query, {"e": endpoint_id}).scalar_one())


def received(receiver: str) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{receiver}/stats").json()
    return stats


async def raw_loop(url: str, secret: str, count: int, concurrency: int) -> float:
    """Deliveries per second for a bare AsyncClient posting signed bodies, `concurrency` at a time."""
    from callbacks.signing import build_headers

    bodies = [
        json.dumps({"type": "webhook.test", "timestamp": None, "data": {"message": f"raw {i}"}}).encode()
        for i in range(count)
    ]
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=15) as client:

        async def post_all() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                headers = build_headers(f"evt_raw{queue.qsize()}", int(time.time()), body, [secret])
                response = await client.post(url, content=body, headers=headers)
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(post_all() for _ in range(concurrency)))
        return count / (time.perf_counter() - started)


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--latency-events", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20, help="events per second in the latency run")
    parser.add_argument("--deliverers", type=int, default=1, help="deliverer processes")
    args = parser.parse_args()
    with service_stack(log_level="WARNING") as stack:
        run(stack, args)


def run(stack: Stack, args: argparse.Namespace) -> None:
    from service.db import session_scope
    from service.principal import Principal
    from service.settings import get_settings
    from service.tenants.models import ALL_SCOPES
    from service.tenants.service import limits_for
    from service.webhooks.models import SigningScheme
    from service.webhooks.service import check_endpoint_url, create_endpoint

    receiver = UvicornApi("bench.fast_receiver:create", stack.env, stack.workdir / "receiver.log")
    stack.processes.append(receiver)
    receiver.start()
    url = f"{receiver.url}/hook"
    with session_scope() as session:
        limits = limits_for(session, stack.tenant_id)
        owner = Principal(
            tenant_id=stack.tenant_id, key_id="bench", scopes=frozenset(ALL_SCOPES), limits=limits
        )
        issued = create_endpoint(
            session,
            owner,
            url=check_endpoint_url(url),
            event_types=[],
            description="bench",
            signing=SigningScheme.V1,
        )
    endpoint_id, secret = issued.endpoint.id, issued.secret
    assert secret is not None
    concurrency = get_settings().webhook_max_in_flight_per_endpoint

    raw_rate = asyncio.run(raw_loop(url, secret, args.events, concurrency))
    httpx.delete(f"{receiver.url}/stats")

    publish_tests(stack.tenant_id, endpoint_id, args.events)
    deliverers = [
        ServiceProcess(["worker", "--queues", "webhooks"], stack.env, stack.workdir / f"deliverer-{n}.log")
        for n in range(args.deliverers)
    ]
    stack.processes.extend(deliverers)
    started = time.perf_counter()
    for deliverer in deliverers:
        deliverer.start()
    meter = CpuMeter({"deliverers": [d.pid for d in deliverers], "receiver": [receiver.pid]})
    meter.start()
    wait_until(lambda: received(receiver.url)["received"] >= args.events, 600, "deliveries")
    elapsed = time.perf_counter() - started
    window = meter.stop()
    wait_until(lambda: pending(endpoint_id) == 0, 120, "recording")
    recorded = time.perf_counter() - started
    rate = args.events / elapsed

    httpx.delete(f"{receiver.url}/stats")
    from service.webhooks.service import publish

    for index in range(args.latency_events):
        with session_scope() as session:
            data = {"endpoint": {"id": endpoint_id}, "message": f"latency {index}"}
            publish(session, stack.tenant_id, "webhook.test", data, endpoint_ids=[endpoint_id])
        time.sleep(1 / args.rate)
    wait_until(lambda: received(receiver.url)["received"] >= args.latency_events, 60, "latency events")
    delays = received(receiver.url)["delays"]

    print(f"{args.events} deliveries to one endpoint by {args.deliverers} deliverer process(es), ", end="")
    print(f"each with at most {concurrency} in flight")
    print(f"raw httpx.AsyncClient loop: {raw_rate:8.1f} posts/s")
    print(f"deliverer:                  {rate:8.1f} deliveries/s (all recorded after {recorded:.1f} s)")
    print(f"ratio:                      {rate / raw_rate:8.2f}  (targets: >= 0.5 and >= 500/s)")
    print(window.describe() + " (deliverers from their start-up)")
    print(
        f"transition -> receiver, {len(delays)} events at {args.rate:g}/s: "
        f"p50 {ms(percentile(delays, 0.5))}, p99 {ms(percentile(delays, 0.99))}  (target p50 < 50 ms)"
    )


if __name__ == "__main__":
    main()
