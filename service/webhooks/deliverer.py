"""The deliverer: an asyncio loop that claims due deliveries from Postgres and sends them concurrently.

Woken at once by a NOTIFY from the transaction that created a delivery, and by a poll every
WEBHOOK_POLL_SECONDS for retries coming due (or a NOTIFY missed while Postgres was away). Claims are
bounded by WEBHOOK_MAX_IN_FLIGHT overall, WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT per endpoint and a fair
share per tenant (delivery.claim_due), so neither one slow receiver nor one tenant's backlog holds
up the others. Outcomes are written back in small batches.

The deliverer's own transactions (claims and recordings) commit without waiting for the disk
(service.db.commit_without_disk_wait): a lease or an outcome that a Postgres crash undoes only means
that delivery is sent again, which at-least-once delivery allows (receivers dedupe by webhook-id), and
an event a recording writes (endpoint.disabled) is undone with the change that caused it, to be made
again when the failure recurs. Events and deliveries are created by the transactions that made them
happen, which still wait for the disk: none is lost. The jobs' commits do not queue behind these.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter

import psycopg
from sqlalchemy.engine import make_url

from observability.forks import fork_safe_loop
from service.db import commit_without_disk_wait, session_scope
from service.outages import describe, is_outage, log_failure
from service.settings import Settings, get_settings
from service.webhooks.delivery import Claimed, Outcome, claim_due, record
from service.webhooks.repository import NOTIFY_CHANNEL
from service.webhooks.retry import MAX_TIMEOUT_SECONDS
from service.webhooks.sending import Sender

log = logging.getLogger(__name__)

RECORD_BATCH = 200
RECORD_INTERVAL = 0.05
CLAIM_INTERVAL = 0.02
"""Claims start at most this often: wake-ups that come closer together (NOTIFYs, recorded batches) are
served by one claim, not one each. A wake-up after a quiet spell claims at once; under load (jobs
finishing every few ms) this halves the claims (per job with one endpoint: 2.5 at 10 ms, 1.2 at 20 ms)
for 5 ms more on the median transition-to-receiver latency (bench.deliveries: 10-11 against 15-17 ms)."""
LEASE_MARGIN_SECONDS = 30.0
STOP_MARGIN_SECONDS = 10.0
"""What a deliverer thread's stop waits beyond WEBHOOK_TIMEOUT_SECONDS (how long the attempts in flight
may take): the last outcomes' recording, or a claim under way."""


class Deliverer:
    """Claims, sends and records until stopped; stopping lets in-flight attempts finish."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sender = Sender(settings)
        self.wake = asyncio.Event()
        self.in_flight: Counter[str] = Counter()
        """Attempts in flight by endpoint, and by tenant below: the claim shares slots by them."""
        self.tenants_in_flight: Counter[str] = Counter()
        self.tasks: set[asyncio.Task[None]] = set()
        self.outcomes: list[Outcome] = []
        self.to_record = asyncio.Event()
        """Set while outcomes wait to be recorded: the recorder sleeps on it, not on a timer."""
        self.stopping = False
        """Set once the run ends: the recorder returns after the batch it is recording, if any."""

    async def run(self, stop: asyncio.Event) -> None:
        listener = asyncio.create_task(self._listen(stop))
        recorder = asyncio.create_task(self._record_loop())
        last_claim = -CLAIM_INTERVAL
        try:
            while not stop.is_set():
                last_claim = await _not_before(last_claim + CLAIM_INTERVAL)
                self.wake.clear()
                try:
                    full = await self._claim_and_send()
                except Exception:
                    log_failure(log, "claiming webhook deliveries failed; retrying")
                    full = False
                if full:
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.webhook_poll_seconds):
                        await _first(self.wake.wait(), stop.wait())
        finally:
            if self.tasks:
                await asyncio.wait(self.tasks, timeout=self.settings.webhook_timeout_seconds + 1)
            # The recorder ends by itself: cancelled mid-batch, it would drop the batch it had taken (an
            # executor's work not yet begun is cancelled with it), and those would be sent again.
            self.stopping = True
            self.to_record.set()
            listener.cancel()
            await asyncio.gather(recorder, listener, return_exceptions=True)
            await self._flush()
            await self.sender.aclose()

    async def _claim_and_send(self) -> bool:
        """Start sending what is due; True when capacity ran out (more may be waiting)."""
        capacity = self.settings.webhook_max_in_flight - len(self.tasks)
        if capacity <= 0:
            return False
        # Copies: tasks ending while the claim runs lower the counts, and the claim may only count high.
        endpoints, tenants = dict(self.in_flight), dict(self.tenants_in_flight)
        loop = asyncio.get_running_loop()
        claimed = await loop.run_in_executor(None, self._claim, capacity, endpoints, tenants)
        for item in claimed:
            self.in_flight[item.endpoint_id] += 1
            self.tenants_in_flight[item.tenant_id] += 1
            task = loop.create_task(self._send(item))
            self.tasks.add(task)
            task.add_done_callback(self._sent)
        return len(claimed) == capacity

    async def _send(self, claimed: Claimed) -> None:
        try:
            outcome = await self.sender.send(claimed)
            self.outcomes.append(outcome)
            self.to_record.set()
        except Exception:
            # The lease lapses and the delivery is tried again; nothing is lost.
            log.exception("sending delivery %s failed unexpectedly", claimed.delivery_id)
        finally:
            _release_slot(self.tenants_in_flight, claimed.tenant_id)
            left = _release_slot(self.in_flight, claimed.endpoint_id)
            if self._refill_due(left, len(self.tasks) - 1):
                self.wake.set()

    def _sent(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)

    def _refill_due(self, endpoint_left: int, tasks_left: int) -> bool:
        """Claim again once a quarter of an endpoint's slots (or of all) are free: the claim runs
        while the other attempts go on, so the slots stay nearly full, and one claim query serves a
        batch of replies rather than each."""
        per_endpoint = self.settings.webhook_max_in_flight_per_endpoint
        overall = self.settings.webhook_max_in_flight
        endpoint_refill = endpoint_left == per_endpoint - _quarter(per_endpoint)
        return endpoint_refill or tasks_left == overall - _quarter(overall)

    async def _record_loop(self) -> None:
        """Record outcomes as they come, at most every RECORD_INTERVAL (under load, in batches; after a
        quiet spell, at once). An idle deliverer does not wake for it (it did 20 times a second); a
        batch that could not be recorded is tried again."""
        last_record = -RECORD_INTERVAL
        while not self.stopping:  # checked again after a batch: the batch's start cleared the wake-up
            await self.to_record.wait()
            if self.stopping:
                return
            last_record = await _not_before(last_record + RECORD_INTERVAL)
            self.to_record.clear()
            await self._flush()
            if self.outcomes:
                self.to_record.set()

    async def _flush(self) -> None:
        while self.outcomes:
            batch, self.outcomes = self.outcomes[:RECORD_BATCH], self.outcomes[RECORD_BATCH:]
            try:
                await asyncio.get_running_loop().run_in_executor(None, self._record, batch)
            except Exception:
                log_failure(log, "recording %d webhook attempts failed; retrying", len(batch))
                self.outcomes[:0] = batch
                await asyncio.sleep(1)
                return
            # Recorded, each delivery lets the next of its job go (per-job order), and its endpoint's
            # slot is free: one claim for the batch.
            self.wake.set()

    async def _listen(self, stop: asyncio.Event) -> None:
        """Set wake on each NOTIFY; reconnect (and catch up) when the connection drops."""
        url = make_url(self.settings.listen_url).set(drivername="postgresql")
        conninfo = url.render_as_string(hide_password=False)
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as connection:
                    await connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self.wake.set()
                    async for _ in connection.notifies():
                        self.wake.set()
            except (psycopg.Error, OSError) as error:
                log.warning("webhook listener lost its connection (%s); polling until it is back", error)
                await asyncio.sleep(1)

    def _claim(self, limit: int, endpoints: dict[str, int], tenants: dict[str, int]) -> list[Claimed]:
        # Endpoints may set a timeout of their own, up to MAX_TIMEOUT_SECONDS: the lease outlasts any.
        lease = max(self.settings.webhook_timeout_seconds, MAX_TIMEOUT_SECONDS) + LEASE_MARGIN_SECONDS
        with session_scope() as session:
            commit_without_disk_wait(session)
            return claim_due(session, limit, self.settings, lease, endpoints, tenants)

    def _record(self, outcomes: list[Outcome]) -> None:
        store(outcomes, self.settings)


async def _not_before(moment: float) -> float:
    """Sleep until the event loop's clock reaches moment (at once if it has); the time then."""
    loop = asyncio.get_running_loop()
    wait = moment - loop.time()
    if wait > 0:
        await asyncio.sleep(wait)
    return loop.time()


def _quarter(slots: int) -> int:
    return max(1, slots // 4)


def _release_slot(in_flight: Counter[str], key: str) -> int:
    """One attempt of key's ended; how many it still has in flight."""
    left = in_flight[key] - 1
    if left > 0:
        in_flight[key] = left
    else:
        del in_flight[key]
    return left


def store(outcomes: list[Outcome], settings: Settings) -> None:
    """Record outcomes in one transaction. If the database refuses the batch for anything but an
    outage, record them one by one, each in a savepoint, and drop (logging it) only what it refuses:
    one bad row never holds up the others. An outage raises: the caller keeps them and retries."""
    try:
        with session_scope() as session:
            commit_without_disk_wait(session)
            vanished = record(session, outcomes, settings)
    except Exception as error:
        if is_outage(error):
            raise
        log.warning(
            "recording %d webhook attempts at once failed (%s); recording them one by one",
            len(outcomes),
            describe(error),
        )
        vanished = _store_each(outcomes, settings)
    if vanished:
        log.info(
            "dropped the outcomes of %d deliveries deleted while in flight: %s",
            len(vanished),
            ", ".join(outcome.claimed.delivery_id for outcome in vanished),
        )


def _store_each(outcomes: list[Outcome], settings: Settings) -> list[Outcome]:
    vanished: list[Outcome] = []
    with session_scope() as session:
        commit_without_disk_wait(session)
        for outcome in outcomes:
            try:
                with session.begin_nested():
                    vanished += record(session, [outcome], settings)
            except Exception as error:
                if is_outage(error):
                    raise
                log.exception(
                    "dropping the outcome of delivery %s: it cannot be recorded", outcome.claimed.delivery_id
                )
    return vanished


async def _first(*waits: object) -> None:
    """Return when the first of these awaitables finishes; cancel the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]  # type: ignore[call-overload]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def run_until(stop: asyncio.Event) -> None:
    """Run a deliverer with the process's settings until stop is set."""
    await Deliverer(get_settings()).run(stop)


class DelivererThread(threading.Thread):
    """A deliverer on its own event loop, beside an RQ worker in the same process."""

    def __init__(self) -> None:
        super().__init__(name="webhook-deliverer", daemon=True)
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None

    def run(self) -> None:
        with fork_safe_loop() as runner:  # the supervisor forks horses meanwhile
            runner.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._started.set()
        await run_until(self._stop_event)

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the loop to stop, let in-flight attempts finish, and wait for it at most timeout seconds
        (by default WEBHOOK_TIMEOUT_SECONDS + STOP_MARGIN_SECONDS). True once it has stopped; False if it
        still runs (a Postgres that does not answer, say): the process may exit all the same, for what
        it had claimed and not recorded is sent again once the leases lapse (at-least-once)."""
        if timeout is None:
            timeout = get_settings().webhook_timeout_seconds + STOP_MARGIN_SECONDS
        deadline = time.monotonic() + timeout
        if self._started.wait(timeout) and self._loop is not None and self._stop_event is not None:
            self._loop.call_soon_threadsafe(self._stop_event.set)
        self.join(max(deadline - time.monotonic(), 0))
        return not self.is_alive()
