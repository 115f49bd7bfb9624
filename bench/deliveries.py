"""Webhook deliveries per second to a fast local receiver beside a raw httpx loop; latency under load;
and draining a backlog across tenants.

1. Raw loop: a bare `httpx.AsyncClient` posts N signed bodies to the receiver, as many at a time as a
   deliverer may send to one endpoint (WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT).
2. Throughput: one deliverer process (`claimcheck worker --queues webhooks`) starts; once it is idle,
   N `webhook.test` events for one endpoint are committed in one transaction and it sends them; the
   rate runs from the first delivery the receiver gets to the last, and the run waits until every
   attempt is recorded. Then the same with two deliverer processes (each with its own per-endpoint
   cap). Targets: one deliverer >= 0.8x the raw loop and >= 500/s; two >= one.
3. Latency: with one deliverer running, events are committed at --latency-rate per second (a few per
   transaction, as job transitions commit them) for --latency-seconds; the receiver records arrival
   time minus the event's timestamp. Target: p50 < 50 ms, p99 < 250 ms at 500/s.
4. Backlog drain: with no deliverer running (as during a receiver outage whose retries have all come
   due), --backlog deliveries pile up over 10 endpoints of 5 tenants, most for one tenant (60/20/10/
   5/5 %), the biggest backlog the oldest. One deliverer then drains it to a receiver that answers in
   --drain-answer-ms (so the requests it holds at once per endpoint show). Reported: drain time and
   rate beside the healthy rate of run 2 (target >= 0.8x), the most requests any endpoint had at once
   (cap: WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT), each tenant's first delivery after the drain's first,
   and the latency of a sixth tenant's fresh events sent during the drain.

    python -m bench.deliveries [--events 5000] [--backlog 20000] [--latency-rate 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from bench.common import REPO_ROOT, CpuMeter, Stack, ms, percentile, process_tree_cpu, service_stack
from service.embedded import free_port
from tests.servers import ServiceProcess

BACKLOG_SHARES = {"tenant-a": 0.60, "tenant-b": 0.20, "tenant-c": 0.10, "tenant-d": 0.05, "tenant-e": 0.05}
ENDPOINTS_PER_TENANT = 2


@dataclass(frozen=True)
class Endpoint:
    tenant_id: str
    id: str
    secret: str
    path: str


def new_tenant(name: str) -> str:
    from service.db import session_scope
    from service.settings import get_settings
    from service.tenants.service import create_tenant

    with session_scope() as session:
        tenant, _ = create_tenant(session, name, server_secret=get_settings().secret_key)
        return tenant.id


def new_endpoint(tenant_id: str, receiver_url: str, path: str, rate: float | None = None) -> Endpoint:
    from service.db import session_scope
    from service.principal import Principal
    from service.tenants.models import ALL_SCOPES
    from service.tenants.service import limits_for
    from service.webhooks.models import SigningScheme
    from service.webhooks.service import DeliveryPolicy, check_endpoint_url, create_endpoint

    with session_scope() as session:
        limits = limits_for(session, tenant_id)
        owner = Principal(tenant_id=tenant_id, key_id="bench", scopes=frozenset(ALL_SCOPES), limits=limits)
        issued = create_endpoint(
            session,
            owner,
            url=check_endpoint_url(receiver_url + path),
            event_types=[],
            description="bench",
            signing=SigningScheme.V1,
            policy=DeliveryPolicy(rate_limit_per_second=rate),
        )
        assert issued.secret is not None
        return Endpoint(tenant_id, issued.endpoint.id, issued.secret, path.split("?")[0])


def publish_tests(endpoint: Endpoint, count: int, per_transaction: int = 500, jobs: int = 0) -> None:
    """`count` webhook.test events for the endpoint, committed `per_transaction` at a time; with `jobs`,
    spread over that many jobs (round robin), so each job's deliveries keep their order."""
    from service.db import session_scope
    from service.webhooks.service import publish

    for start in range(0, count, per_transaction):
        with session_scope() as session:
            for index in range(start, min(start + per_transaction, count)):
                data = {"endpoint": {"id": endpoint.id}, "message": f"bench event {index}"}
                job_id = f"job_bench{endpoint.id[-8:]}{index % jobs:06d}" if jobs else None
                publish(
                    session,
                    endpoint.tenant_id,
                    "webhook.test",
                    data,
                    endpoint_ids=[endpoint.id],
                    job_id=job_id,
                )


def publish_at_rate(
    endpoint: Endpoint, rate: float, seconds: float, per_transaction: int
) -> tuple[int, float]:
    """Commit events at `rate` per second, `per_transaction` in each transaction, for `seconds`; how
    many, and the rate reached."""
    started = time.perf_counter()
    sent = 0
    while time.perf_counter() - started < seconds:
        publish_tests(endpoint, per_transaction, per_transaction)
        sent += per_transaction
        time.sleep(max(0.0, started + sent / rate - time.perf_counter()))
    return sent, sent / (time.perf_counter() - started)


def counts(endpoint_ids: list[str]) -> tuple[int, int]:
    """(deliveries still pending, attempts recorded) of these endpoints."""
    from sqlalchemy import text

    from service.db import session_scope

    query = text(
        """SELECT (SELECT count(*) FROM webhook_deliveries
                   WHERE endpoint_id = ANY(:ids) AND status = 'PENDING'),
                  (SELECT count(*) FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id
                   WHERE d.endpoint_id = ANY(:ids))"""
    )
    with session_scope() as session:
        pending, attempts = session.execute(query, {"ids": endpoint_ids}).one()
        return int(pending), int(attempts)


def failures(endpoint_ids: list[str]) -> str:
    """The attempts of these endpoints that did not succeed, by status code and error."""
    from sqlalchemy import text

    from service.db import session_scope

    query = text(
        """SELECT a.status_code, left(a.error, 80), count(*) FROM webhook_attempts a
           JOIN webhook_deliveries d ON d.id = a.delivery_id
           WHERE d.endpoint_id = ANY(:ids) AND a.status_code IS DISTINCT FROM 204
           GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 5"""
    )
    with session_scope() as session:
        rows = session.execute(query, {"ids": endpoint_ids}).all()
    return ", ".join(f"{n} x {code or ''} {error or ''}".strip() for code, error, n in rows) or "none"


class _ReceiverProcess(ServiceProcess):
    """One process of the receiver: `python -m bench.fast_receiver` on the shared port."""

    def __init__(self, port: int, env: dict[str, str], log_path: Any) -> None:
        self.control_port = free_port()
        super().__init__(["--port", str(port), "--control-port", str(self.control_port)], env, log_path)

    cwd = REPO_ROOT

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench.fast_receiver", *self.args]


class Receiver:
    """The fast receiver as `processes` processes sharing one port (SO_REUSEPORT: the kernel spreads
    connections over them), so the receiver is not what two deliverers (or the raw loop) run into.
    Each process counts what it got; stats() adds them up."""

    def __init__(self, stack: Stack, processes: int) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.processes = [
            _ReceiverProcess(port, stack.env, stack.workdir / f"receiver-{n}.log") for n in range(processes)
        ]
        for process in self.processes:
            stack.processes.append(process)
            process.start()
        for process in self.processes:
            wait_until(lambda p=process: _answers(p.control_port), 30, "the receiver to start")

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def each(self, *, delays: bool = False) -> list[dict[str, Any]]:
        suffix = "?delays" if delays else ""
        return [
            httpx.get(f"http://127.0.0.1:{p.control_port}/stats{suffix}", timeout=30).json()
            for p in self.processes
        ]

    def reset(self) -> None:
        for p in self.processes:
            httpx.delete(f"http://127.0.0.1:{p.control_port}/stats")


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/stats", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def stats(receiver: Receiver, *, delays: bool = False) -> dict[str, Any]:
    """Every receiver process's stats added up: per path, the first and last arrival over all, and the
    most requests in flight at once, from the requests' spans where the path has them."""
    found = receiver.each(delays=delays)
    total: dict[str, Any] = {"received": sum(f["received"] for f in found)}
    if not delays:
        return total
    total["delays"] = [d for f in found for d in f["delays"]]
    paths: dict[str, dict[str, Any]] = {}
    for f in found:
        for path, mine in f["paths"].items():
            merged = paths.get(path)
            if merged is None:
                paths[path] = {**mine, "delays": list(mine["delays"]), "spans": list(mine["spans"])}
                continue
            merged["received"] += mine["received"]
            merged["delays"] += mine["delays"]
            merged["spans"] += mine["spans"]
            merged["first"] = min(x for x in (merged["first"], mine["first"]) if x is not None)
            merged["last"] = max(x for x in (merged["last"], mine["last"]) if x is not None)
            merged["max_in_flight"] = max(merged["max_in_flight"], mine["max_in_flight"])
    for merged in paths.values():
        if merged["spans"]:
            merged["max_in_flight"] = most_at_once(merged["spans"])
    total["paths"] = paths
    return total


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most of these [start, end] intervals open at one moment."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans], key=lambda e: e)
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


async def raw_loop(url: str, secret: str, count: int, concurrency: int) -> float:
    """Posts per second for a bare AsyncClient posting signed bodies, `concurrency` at a time."""
    from callbacks.signing import build_headers

    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(json.dumps({"type": "webhook.test", "timestamp": None, "data": {"n": i}}).encode())
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


def wait_until(condition: Any, timeout: float, what: str, interval: float = 0.05, show: Any = None) -> None:
    """Wait for condition() to be true; a TimeoutError names what was awaited (and show(), if given)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: {show()}" if show else what)
        time.sleep(interval)


def start_deliverers(stack: Stack, count: int, name: str) -> list[ServiceProcess]:
    env = {**stack.env, "WEBHOOK_TIMEOUT_SECONDS": "15"}  # the production default, not the tests' 2 s
    deliverers = [
        ServiceProcess(["worker", "--queues", "webhooks"], env, stack.workdir / f"{name}-{n}.log")
        for n in range(count)
    ]
    stack.processes.extend(deliverers)
    for deliverer in deliverers:
        deliverer.start()
    return deliverers


def stop_deliverers(stack: Stack, deliverers: list[ServiceProcess]) -> None:
    for deliverer in deliverers:
        deliverer.stop()
        stack.processes.remove(deliverer)


def throughput(
    stack: Stack, receiver: Receiver, processes: int, events: int, jobs: int = 0
) -> tuple[float, float, str]:
    """(deliveries/s from the first arrival to the last, seconds from start-up until all recorded,
    CPU) for `processes` deliverers sending `events` to one new endpoint (over `jobs` jobs: ordered)."""
    endpoint = new_endpoint(stack.tenant_id, receiver.url, f"/throughput-{processes}-{jobs}")
    deliverers = start_deliverers(stack, processes, f"throughput-{processes}")
    # Every deliverer started up (its CPU settled) before the events come due, all in one commit: a
    # second process's start-up (a second of imports) does not eat into the first one's sending.
    wait_until(lambda: _settled([d.pid for d in deliverers]), 60, "the deliverers to start", interval=0)
    publish_tests(endpoint, events, per_transaction=events, jobs=jobs)
    started = time.perf_counter()
    wait_until(lambda: stats(receiver)["received"] > 0, 60, "the first delivery", interval=0.01)
    meter = CpuMeter({"deliverers": [d.pid for d in deliverers], "receiver": receiver.pids})
    meter.start()
    at_start = stats(receiver)["received"]
    wait_until(lambda: stats(receiver)["received"] >= events, 600, "deliveries", interval=0.02)
    window = meter.stop()
    split = [f["received"] for f in receiver.each()]
    wait_until(
        lambda: counts([endpoint.id]) == (0, events),
        120,
        "every attempt recorded",
        show=lambda: f"(pending, attempts) {counts([endpoint.id])}; failed: {failures([endpoint.id])}",
    )
    recorded = time.perf_counter() - started
    path = stats(receiver, delays=True)["paths"][endpoint.path]
    stop_deliverers(stack, deliverers)
    receiver.reset()
    per_delivery = window.groups["deliverers"] * window.wall / max(events - at_start, 1) * 1000
    cpu = (
        f"{window.describe()} (from the first delivery to the last); deliverer CPU per delivery "
        f"{per_delivery:.2f} ms; receiver processes got {'/'.join(map(str, split))}"
    )
    return (events - 1) / (path["last"] - path["first"]), recorded, cpu


def _settled(pids: list[int], window: float = 0.3, most: float = 0.03) -> bool:
    """Whether these processes used under `most` of a core over the next `window` seconds."""
    before = [process_tree_cpu([pid]) for pid in pids]
    time.sleep(window)
    return all(process_tree_cpu([pid]) - used < most * window for pid, used in zip(pids, before, strict=True))


def latency(stack: Stack, receiver: Receiver, rate: float, seconds: float, per_transaction: int) -> str:
    endpoint = new_endpoint(stack.tenant_id, receiver.url, "/latency")
    deliverers = start_deliverers(stack, 1, "latency")
    wait_until(lambda: _deliverer_ready(endpoint, receiver), 60, "the deliverer to start")
    receiver.reset()
    sent, reached = publish_at_rate(endpoint, rate, seconds, per_transaction)
    wait_until(lambda: stats(receiver)["received"] >= sent, 120, "latency events")
    delays = stats(receiver, delays=True)["delays"]
    stop_deliverers(stack, deliverers)
    receiver.reset()
    return (
        f"transition -> receiver, {len(delays)} events at {reached:.0f}/s "
        f"({per_transaction} per transaction) for {seconds:g} s: "
        f"p50 {ms(percentile(delays, 0.5))}, p99 {ms(percentile(delays, 0.99))}  (targets: < 50 ms, < 250 ms)"
    )


def _deliverer_ready(endpoint: Endpoint, receiver: Receiver) -> bool:
    """Publish one event and see whether it arrived (the deliverer is up and listening)."""
    if stats(receiver)["received"]:
        return True
    publish_tests(endpoint, 1)
    time.sleep(0.2)
    return bool(stats(receiver)["received"])


def drain(
    stack: Stack, receiver: Receiver, backlog: int, answer_ms: int, healthy_rate: float | None
) -> list[str]:
    """Build the backlog with no deliverer running, then drain it with one; the figures as lines."""
    from service.settings import get_settings

    endpoints: dict[str, list[Endpoint]] = {}
    for name in BACKLOG_SHARES:
        tenant_id = new_tenant(name)
        endpoints[name] = [
            new_endpoint(tenant_id, receiver.url, f"/drain/{name}/{n}?delay_ms={answer_ms}")
            for n in range(ENDPOINTS_PER_TENANT)
        ]
    built = time.perf_counter()
    for name, share in BACKLOG_SHARES.items():  # the biggest backlog first: it is the oldest
        for endpoint in endpoints[name]:
            publish_tests(endpoint, round(backlog * share / ENDPOINTS_PER_TENANT))
    built = time.perf_counter() - built
    total = sum(
        round(backlog * s / ENDPOINTS_PER_TENANT) * ENDPOINTS_PER_TENANT for s in BACKLOG_SHARES.values()
    )
    fresh = new_endpoint(new_tenant("tenant-fresh"), receiver.url, "/drain-fresh")

    deliverers = start_deliverers(stack, 1, "drain")
    started = time.perf_counter()
    wait_until(lambda: stats(receiver)["received"] > 0, 60, "the first delivery")
    fresh_events = 20
    publisher = threading.Thread(target=publish_at_rate, args=(fresh, 10, fresh_events / 10, 1))
    publisher.start()
    wait_until(lambda: stats(receiver)["received"] >= total + fresh_events, 900, "the drain", interval=0.2)
    publisher.join()
    ids = [e.id for group in endpoints.values() for e in group]
    wait_until(
        lambda: (found := counts(ids))[0] == 0 and found[1] >= total,
        120,
        "every attempt recorded",
        show=lambda: f"(pending, attempts) {counts(ids)}, expected (0, {total})",
    )
    recorded = time.perf_counter() - started
    stop_deliverers(stack, deliverers)
    paths = stats(receiver, delays=True)["paths"]
    receiver.reset()

    drained = [paths[e.path] for group in endpoints.values() for e in group]
    first = min(p["first"] for p in drained)
    seconds = max(p["last"] for p in drained) - first
    rate = total / seconds
    cap = get_settings().webhook_max_in_flight_per_endpoint
    lines = [
        f"backlog drain: {total} due deliveries (built in {built:.1f} s) over {len(ids)} endpoints of "
        f"{len(endpoints)} tenants ({'/'.join(f'{s:.0%}' for s in BACKLOG_SHARES.values())}), "
        f"receiver answering in {answer_ms} ms, one deliverer",
        f"  drained in {seconds:.1f} s = {rate:.1f}/s"
        + (
            f"; healthy rate {healthy_rate:.1f}/s; ratio {rate / healthy_rate:.2f} (target >= 0.8)"
            if healthy_rate
            else ""
        )
        + f"; all recorded {recorded:.1f} s after start-up",
        f"  most in flight at one endpoint: {max(p['max_in_flight'] for p in drained)} (cap {cap}); "
        f"{counts(ids)[1]} attempts recorded, failed: {failures(ids)}",
    ]
    for name, group in endpoints.items():
        mine = [paths[e.path] for e in group]
        delay = min(p["first"] for p in mine) - first
        done = max(p["last"] for p in mine) - first
        lines.append(
            f"  {name}: {sum(p['received'] for p in mine):6d} deliveries, first after {ms(delay)}, "
            f"last after {done:.1f} s"
        )
    delays = paths[fresh.path]["delays"]
    lines.append(
        f"  a sixth tenant's fresh events during the drain ({len(delays)} at 10/s): "
        f"p50 {ms(percentile(delays, 0.5))}, p99 {ms(percentile(delays, 0.99))}"
    )
    return lines


def rate_limit(stack: Stack, receiver: Receiver, rate: float, seconds: float) -> list[str]:
    """An endpoint limited to `rate`/s gets rate x seconds events at once, beside an unlimited one with
    as many: the limited one's achieved rate over the run (target within 10 % of the limit, never
    above it) and the other's rate beside the healthy one."""
    events = int(rate * seconds)
    limited = new_endpoint(stack.tenant_id, receiver.url, "/rate-limited", rate=rate)
    free = new_endpoint(stack.tenant_id, receiver.url, "/rate-free")
    publish_tests(limited, events)
    publish_tests(free, events)
    deliverers = start_deliverers(stack, 1, "rate")
    wait_until(lambda: stats(receiver)["received"] >= 2 * events, seconds * 3 + 60, "deliveries")
    paths = stats(receiver, delays=True)["paths"]
    stop_deliverers(stack, deliverers)
    receiver.reset()
    took = paths[limited.path]["last"] - paths[limited.path]["first"]
    achieved = (events - 1) / took
    free_rate = (events - 1) / (paths[free.path]["last"] - paths[free.path]["first"])
    return [
        f"rate limit {rate:g}/s, {events} events at once: sent over {took:.1f} s, {achieved:.2f}/s"
        f" = {achieved / rate:.3f} x the limit (target 0.9 .. 1.0, plus the first second's burst)",
        f"an unlimited endpoint beside it: {free_rate:.1f} deliveries/s",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=5000, help="events in the throughput runs")
    parser.add_argument(
        "--latency-rate", type=float, default=500, help="events per second in the latency run"
    )
    parser.add_argument("--latency-seconds", type=float, default=10)
    parser.add_argument("--per-transaction", type=int, default=5, help="events per transaction, latency run")
    parser.add_argument("--backlog", type=int, default=20000, help="due deliveries in the drain run")
    parser.add_argument("--drain-answer-ms", type=int, default=5, help="receiver answer time, drain run")
    parser.add_argument("--rate", type=float, default=50, help="the rate-limited endpoint's limit")
    parser.add_argument("--rate-seconds", type=float, default=30, help="how long the rate run lasts")
    parser.add_argument(
        "--receivers", type=int, default=3, help="receiver processes sharing its port (SO_REUSEPORT)"
    )
    parser.add_argument(
        "--runs", default="throughput,order,rate,latency,drain", help="which runs, comma-separated"
    )
    args = parser.parse_args()
    with service_stack(log_level="WARNING") as stack:
        run(stack, args)


def run(stack: Stack, args: argparse.Namespace) -> None:
    from service.settings import get_settings

    receiver = Receiver(stack, args.receivers)
    concurrency = get_settings().webhook_max_in_flight_per_endpoint

    runs = set(args.runs.split(","))
    healthy = None
    if "throughput" in runs:
        raw = new_endpoint(stack.tenant_id, receiver.url, "/raw")
        raw_rate = asyncio.run(raw_loop(receiver.url + raw.path, raw.secret, args.events, concurrency))
        receiver.reset()
        one, one_recorded, one_cpu = throughput(stack, receiver, 1, args.events)
        two, two_recorded, two_cpu = throughput(stack, receiver, 2, args.events)
        healthy = one
        print(
            f"{args.events} deliveries to one endpoint, at most {concurrency} in flight per deliverer "
            f"process; receiver: {args.receivers} processes sharing one port (SO_REUSEPORT)"
        )
        print(f"raw httpx loop:  {raw_rate:7.1f} posts/s")
        print(f"one deliverer:   {one:7.1f} deliveries/s (all recorded {one_recorded:.1f} s from start)")
        print(f"two deliverers:  {two:7.1f} deliveries/s (all recorded {two_recorded:.1f} s from start)")
        print(f"one / raw {one / raw_rate:.2f} (target >= 0.8, >= 500/s); two / one {two / one:.2f} (>= 1)")
        print("one deliverer:  " + one_cpu)
        print("two deliverers: " + two_cpu)
    if "order" in runs:
        unordered, _, _ = throughput(stack, receiver, 1, args.events)
        jobs = max(args.events // 5, 1)
        ordered, _, _ = throughput(stack, receiver, 1, args.events, jobs=jobs)
        print(f"{args.events} deliveries to one endpoint, one deliverer")
        print(f"unordered (no job):           {unordered:7.1f} deliveries/s")
        print(f"ordered ({jobs} jobs x 5 each): {ordered:7.1f} deliveries/s")
        print(f"ordered / unordered {ordered / unordered:.2f} (target >= 0.9)")
    if "rate" in runs:
        for line in rate_limit(stack, receiver, args.rate, args.rate_seconds):
            print(line)
    if "latency" in runs:
        print(latency(stack, receiver, args.latency_rate, args.latency_seconds, args.per_transaction))
    if "drain" in runs:
        for line in drain(stack, receiver, args.backlog, args.drain_answer_ms, healthy):
            print(line)


if __name__ == "__main__":
    main()
