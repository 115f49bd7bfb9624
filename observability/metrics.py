"""OpenTelemetry metrics, read by Prometheus: every instrument Claimcheck records, defined here.

Call ``setup_metrics(service_name)`` once per process; the instruments below are module-level and
work before it (they record nothing until a provider is installed). Record through the small
``record_*`` functions. Each process serves its scrape on a port of its own,
``start_metrics_server(port)`` (``METRICS_PORT``), never on the public API port.

Prometheus sees each metric under the name in ``PROMETHEUS_NAMES`` (OpenTelemetry's name with dots
as underscores, the unit as a suffix, ``_total`` on counters; histograms add ``_bucket``, ``_sum``
and ``_count``). The Grafana dashboard queries those names; a test keeps them in step.

Metrics are per process. An RQ worker runs each job in a forked child that exits with
``os._exit``: what the child records is lost with it. Record job outcomes (finished, duration,
queue wait) in the worker's parent process, after the child ends, or in the API/scheduler.

Some gauges are read at scrape time from the process that owns the state, through ``register_*``
callbacks: the worker registers RQ's queue depth, the webhook delivery backlog, its job slots and its
deliverer; the scheduler the outbox. Counters whose label values are known in advance start at 0
(``setup_metrics``, ``start_job_counters``), so that the first event is an increase Prometheus sees.
Labels stay bounded: no job or tenant ids, but for the top ``TOP_TENANTS`` tenants of one gauge.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client import REGISTRY, start_http_server
from prometheus_client.registry import Collector

from observability.forks import GATE
from observability.recent import RecentOutcomes

log = logging.getLogger(__name__)

METER_NAME = "claimcheck"

# Seconds: a job runs from well under a second to tens of minutes; waits and attempts are shorter.
JOB_SECONDS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
WAIT_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
ATTEMPT_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30)
DELIVERY_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200, 36000, 86400, 432000)

OVERDUE_SECONDS = 60.0  # a delivery due for longer than this is overdue: no deliverer took it
OUTBOX_SAMPLE = 500  # the outbox gauges look at this many of the oldest jobs ready to run
TENANT_WINDOW_SECONDS = 300.0  # per-tenant webhook results: over the last five minutes...
TOP_TENANTS = 10  # ...for at most this many tenants (bounded cardinality)
SCRAPE_READ_SECONDS = 5.0  # a database read behind a gauge gives up after this (a scrape has 10 s)

# Webhook attempt outcomes (the ``outcome`` attribute).
OUTCOME_SUCCESS = "success"  # 2xx
OUTCOME_HTTP_ERROR = "http_error"  # any other status, redirects included
OUTCOME_GONE = "gone"  # 410: the endpoint is disabled
OUTCOME_TIMEOUT = "timeout"
OUTCOME_NETWORK_ERROR = "network_error"  # connect, TLS, reset...
OUTCOME_REFUSED = "refused"  # the SSRF guard refused the address
OUTCOME_NOT_SENT = "not_sent"  # the request could not be prepared (a key that cannot sign, a setting)
OUTCOMES = (
    OUTCOME_SUCCESS,
    OUTCOME_HTTP_ERROR,
    OUTCOME_GONE,
    OUTCOME_TIMEOUT,
    OUTCOME_NETWORK_ERROR,
    OUTCOME_REFUSED,
    OUTCOME_NOT_SENT,
)

_meter = metrics.get_meter(METER_NAME)

JOBS_CREATED = _meter.create_counter(
    "claimcheck.jobs.created", unit="{job}", description="Jobs created, by kind"
)
JOBS_FINISHED = _meter.create_counter(
    "claimcheck.jobs.finished",
    unit="{job}",
    description="Jobs that reached a terminal status, by kind and status (succeeded, failed, canceled)",
)
JOB_DURATION = _meter.create_histogram(
    "claimcheck.job.duration",
    unit="s",
    description="Time from a job's start to its terminal status, by kind and status",
    explicit_bucket_boundaries_advisory=JOB_SECONDS,
)
JOB_QUEUE_WAIT = _meter.create_histogram(
    "claimcheck.job.queue_wait",
    unit="s",
    description="Time from a job's creation to a worker starting it, by kind",
    explicit_bucket_boundaries_advisory=WAIT_SECONDS,
)
WEBHOOK_ATTEMPTS = _meter.create_counter(
    "claimcheck.webhook.attempts",
    unit="{attempt}",
    description="Webhook delivery attempts, by outcome, status class and trigger (scheduled, manual)",
)
WEBHOOK_ATTEMPT_DURATION = _meter.create_histogram(
    "claimcheck.webhook.attempt.duration",
    unit="s",
    description="Duration of one webhook attempt, by outcome",
    explicit_bucket_boundaries_advisory=ATTEMPT_SECONDS,
)
WEBHOOK_DELIVERY_LATENCY = _meter.create_histogram(
    "claimcheck.webhook.delivery.latency",
    unit="s",
    description="Time from an event's creation to its successful delivery (retries included), by event type",
    explicit_bucket_boundaries_advisory=DELIVERY_SECONDS,
)
WEBHOOK_ENDPOINTS_DISABLED = _meter.create_counter(
    "claimcheck.webhook.endpoints.disabled",
    unit="{endpoint}",
    description="Webhook endpoints disabled, by reason (failing, gone)",
)
RATE_LIMIT_REJECTIONS = _meter.create_counter(
    "claimcheck.rate_limit.rejections",
    unit="{request}",
    description="Requests refused by a per-tenant limit, by limit (rate, concurrency, quota)",
)

OUTBOX_REENQUEUED = _meter.create_counter(
    "claimcheck.outbox.reenqueued",
    unit="{job}",
    description="Committed jobs the scheduler's sweep found missing from RQ and enqueued again",
)
SUBSCRIPTION_RENDERS = _meter.create_counter(
    "claimcheck.subscription.renders",
    unit="{result}",
    description="Subscription results executed and rendered to JSON: once per group of identical"
    " subscriptions, however many subscribers receive each",
)
SUBSCRIPTION_RECIPIENTS = _meter.create_counter(
    "claimcheck.subscription.recipients",
    unit="{message}",
    description="Subscription results handed to subscribers (each rendered result times its group's members)",
)
HTTP_REQUESTS = _meter.create_counter(
    "claimcheck.http.server.requests",
    unit="{request}",
    description="HTTP responses of the API, by route template, method and status code",
)

# Counters whose label values are known start at 0 in every process: the first event is then an
# increase Prometheus can see (a series born at 1 shows none to increase() or rate()).
_ATTEMPT_CLASSES = {
    OUTCOME_SUCCESS: ("2xx",),
    OUTCOME_HTTP_ERROR: ("3xx", "4xx", "5xx"),
    OUTCOME_GONE: ("4xx",),
    OUTCOME_TIMEOUT: ("none",),
    OUTCOME_NETWORK_ERROR: ("none",),
    OUTCOME_REFUSED: ("none",),
    OUTCOME_NOT_SENT: ("none",),
}
_KNOWN_LABELS: tuple[tuple[Any, dict[str, str]], ...] = (
    *(
        (WEBHOOK_ATTEMPTS, {"outcome": outcome, "status_class": status_class, "trigger": trigger})
        for outcome, classes in _ATTEMPT_CLASSES.items()
        for status_class in classes
        for trigger in ("scheduled", "manual")
    ),
    *((WEBHOOK_ENDPOINTS_DISABLED, {"reason": reason}) for reason in ("failing", "gone")),
    *((RATE_LIMIT_REJECTIONS, {"limit": limit}) for limit in ("rate", "query_rate", "concurrency", "quota")),
    (OUTBOX_REENQUEUED, {}),
    (SUBSCRIPTION_RENDERS, {}),
    (SUBSCRIPTION_RECIPIENTS, {}),
)


# --- read at scrape time -------------------------------------------------------------------------

Reading = Iterable[tuple[float, Mapping[str, str]]]
"""What a gauge callback returns: (value, attributes) pairs."""


class _Sources:
    """The callbacks an observable gauge reads at each scrape. A failing one is logged and skipped:
    the others, and the rest of the scrape, still report."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._callbacks: list[Callable[[], Reading]] = []

    def register(self, callback: Callable[[], Reading]) -> Callable[[], None]:
        self._callbacks.append(callback)

        def unregister() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return unregister

    def observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        observations: list[Observation] = []
        for callback in list(self._callbacks):
            try:
                observations.extend(Observation(value, dict(labels)) for value, labels in callback())
            except Exception:
                log.warning("%s callback %r failed", self.name, callback, exc_info=True)
        return observations


def _gauge(name: str, unit: str, description: str) -> tuple[Any, _Sources]:
    sources = _Sources(name)
    gauge = _meter.create_observable_gauge(
        name, callbacks=[sources.observe], unit=unit, description=description
    )
    return gauge, sources


QUEUE_DEPTH, _queue_depth = _gauge(
    "claimcheck.queue.depth",
    "{item}",
    "Items waiting, by queue (jobs: RQ's queue; webhooks: deliveries due), read at scrape time",
)
WORKER_JOB_SLOTS, _worker_slots = _gauge(
    "claimcheck.worker.job_slots",
    "{slot}",
    "A worker's places for running jobs, by state (busy: running a job; idle)",
)
WEBHOOK_DELIVERERS, _deliverers = _gauge(
    "claimcheck.webhook.deliverers",
    "{deliverer}",
    "Webhook deliverer loops running in this process (0 when a worker's deliverer stopped)",
)
WEBHOOK_DELIVERIES_OVERDUE, _overdue = _gauge(
    "claimcheck.webhook.deliveries.overdue",
    "{delivery}",
    f"Deliveries due for more than {OVERDUE_SECONDS:g} s that no deliverer has taken",
)
OUTBOX_LAG, _outbox_lag = _gauge(
    "claimcheck.outbox.lag",
    "s",
    "How long the oldest job ready to run has been committed without being in RQ (0: none)",
)
OUTBOX_MISSING, _outbox_missing = _gauge(
    "claimcheck.outbox.missing_from_queue",
    "{job}",
    f"Jobs ready to run that RQ does not hold (among the {OUTBOX_SAMPLE} oldest ready)",
)
OLDEST_QUEUED, _oldest_queued = _gauge(
    "claimcheck.jobs.oldest_queued_age",
    "s",
    "How long the oldest job ready to run has waited for a worker (0: none waits)",
)
WEBHOOK_TENANT_ATTEMPTS, _tenant_attempts = _gauge(
    "claimcheck.webhook.tenant_attempts",
    "{attempt}",
    f"This process's webhook attempts in the last {TENANT_WINDOW_SECONDS:g} s, by result (success, "
    f"failure), for the {TOP_TENANTS} tenants with the most failures (then the most attempts)",
)
SWEEP_TIMESTAMP, _sweeps = _gauge(
    "claimcheck.scheduler.last_sweep_timestamp",
    "s",
    "Unix time at which each scheduler sweep last completed, by sweep",
)

# What Prometheus calls each instrument above (histograms: plus _bucket, _sum, _count).
PROMETHEUS_NAMES: dict[str, str] = {
    "claimcheck.jobs.created": "claimcheck_jobs_created_total",
    "claimcheck.jobs.finished": "claimcheck_jobs_finished_total",
    "claimcheck.job.duration": "claimcheck_job_duration_seconds",
    "claimcheck.job.queue_wait": "claimcheck_job_queue_wait_seconds",
    "claimcheck.queue.depth": "claimcheck_queue_depth",
    "claimcheck.webhook.attempts": "claimcheck_webhook_attempts_total",
    "claimcheck.webhook.attempt.duration": "claimcheck_webhook_attempt_duration_seconds",
    "claimcheck.webhook.delivery.latency": "claimcheck_webhook_delivery_latency_seconds",
    "claimcheck.webhook.endpoints.disabled": "claimcheck_webhook_endpoints_disabled_total",
    "claimcheck.rate_limit.rejections": "claimcheck_rate_limit_rejections_total",
    "claimcheck.outbox.reenqueued": "claimcheck_outbox_reenqueued_total",
    "claimcheck.http.server.requests": "claimcheck_http_server_requests_total",
    "claimcheck.subscription.renders": "claimcheck_subscription_renders_total",
    "claimcheck.subscription.recipients": "claimcheck_subscription_recipients_total",
    "claimcheck.worker.job_slots": "claimcheck_worker_job_slots",
    "claimcheck.webhook.deliverers": "claimcheck_webhook_deliverers",
    "claimcheck.webhook.deliveries.overdue": "claimcheck_webhook_deliveries_overdue",
    "claimcheck.outbox.lag": "claimcheck_outbox_lag_seconds",
    "claimcheck.outbox.missing_from_queue": "claimcheck_outbox_missing_from_queue",
    "claimcheck.jobs.oldest_queued_age": "claimcheck_jobs_oldest_queued_age_seconds",
    "claimcheck.webhook.tenant_attempts": "claimcheck_webhook_tenant_attempts",
    "claimcheck.scheduler.last_sweep_timestamp": "claimcheck_scheduler_last_sweep_timestamp_seconds",
}
HISTOGRAMS = frozenset(
    {
        "claimcheck.job.duration",
        "claimcheck.job.queue_wait",
        "claimcheck.webhook.attempt.duration",
        "claimcheck.webhook.delivery.latency",
    }
)


# --- set-up --------------------------------------------------------------------------------------

_lock = threading.Lock()
_provider: MeterProvider | None = None


def setup_metrics(
    service_name: str,
    *,
    readers: Sequence[MetricReader] = (),
    environ: Mapping[str, str] | None = None,
) -> MeterProvider | None:
    """Install the process's meter provider with a Prometheus reader (on prometheus_client's registry).

    Idempotent: later calls return the installed provider (their ``readers`` are ignored). None when
    ``OTEL_SDK_DISABLED=true``, or when another meter provider was installed first.
    """
    global _provider
    environ = os.environ if environ is None else environ
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    with _lock:
        if _provider is not None:
            return _provider
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME") or service_name})
        provider = MeterProvider(resource=resource, metric_readers=[PrometheusMetricReader(), *readers])
        metrics.set_meter_provider(provider)
        if metrics.get_meter_provider() is not provider:
            log.warning("another meter provider was installed first; claimcheck's metrics setup is unused")
            provider.shutdown()
            return None
        _provider = provider
        for counter, labels in _KNOWN_LABELS:
            counter.add(0, labels)
        return provider


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> tuple[Any, threading.Thread]:  # noqa: S104
    """Serve the scrape on its own port from a daemon thread (the api, worker and scheduler processes).

    Returns prometheus_client's (server, thread); ``server.shutdown()`` stops it.
    """
    server, thread = start_http_server(port, addr=addr, registry=_ForkSafeCollector(REGISTRY))
    log.info("metrics on http://%s:%d/metrics", addr, server.server_port)
    return server, thread


class _ForkSafeCollector(Collector):
    """A scrape reads Postgres and Redis from the server's thread: it holds the fork gate meanwhile
    (observability/forks.py), as the worker forks its horses."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def collect(self) -> Iterable[Any]:
        with GATE.shared():
            return list(self._inner.collect())

    def restricted_registry(self, names: Iterable[str]) -> _ForkSafeCollector:
        return _ForkSafeCollector(self._inner.restricted_registry(names))


# --- recording -----------------------------------------------------------------------------------


def _status(status: str) -> str:
    return str(status).lower()


JOB_END_STATUSES = ("succeeded", "failed", "canceled")


def start_job_counters(kinds: Iterable[str]) -> None:
    """Start the created and finished counters of these job kinds at 0 (a process that records them
    calls it at start): a kind's first jobs are then an increase Prometheus sees."""
    for kind in kinds:
        JOBS_CREATED.add(0, {"kind": kind})
        for status in JOB_END_STATUSES:
            JOBS_FINISHED.add(0, {"kind": kind, "status": status})


def record_job_created(kind: str) -> None:
    """A job was created (after the request's transaction commits)."""
    JOBS_CREATED.add(1, {"kind": kind})


def record_job_finished(kind: str, status: str, duration_seconds: float | None = None) -> None:
    """A job reached a terminal status; ``duration_seconds`` from its start, when it started."""
    attributes = {"kind": kind, "status": _status(status)}
    JOBS_FINISHED.add(1, attributes)
    if duration_seconds is not None:
        JOB_DURATION.record(max(0.0, duration_seconds), attributes)


def record_queue_wait(kind: str, seconds: float) -> None:
    """A worker started a job ``seconds`` after it was created."""
    JOB_QUEUE_WAIT.record(max(0.0, seconds), {"kind": kind})


def register_queue_depth(callback: Callable[[], Mapping[str, float]]) -> Callable[[], None]:
    """Report queue depths at each scrape: ``callback()`` returns ``{queue_name: items_waiting}``.

    Register it in one kind of process (the worker) so dashboards do not count a queue twice.
    Returns a function that unregisters it.
    """
    return _queue_depth.register(lambda: [(depth, {"queue": queue}) for queue, depth in callback().items()])


def status_class(status_code: int | None) -> str:
    """``2xx`` .. ``5xx``, or ``none`` when no response came."""
    return f"{status_code // 100}xx" if status_code else "none"


def attempt_outcome(
    status_code: int | None, *, timed_out: bool = False, refused: bool = False, not_sent: bool = False
) -> str:
    """The ``outcome`` of one attempt from what happened (see ``OUTCOMES``)."""
    if not_sent:
        return OUTCOME_NOT_SENT
    if refused:
        return OUTCOME_REFUSED
    if timed_out:
        return OUTCOME_TIMEOUT
    if status_code is None:
        return OUTCOME_NETWORK_ERROR
    if 200 <= status_code < 300:
        return OUTCOME_SUCCESS
    return OUTCOME_GONE if status_code == 410 else OUTCOME_HTTP_ERROR


def record_webhook_attempt(
    outcome: str,
    *,
    duration_seconds: float,
    status_code: int | None = None,
    trigger: str = "scheduled",
    tenant_id: str | None = None,
) -> None:
    """One webhook attempt ended (``outcome`` from ``attempt_outcome``; ``trigger``: scheduled, manual).

    With ``tenant_id``, it also counts towards that tenant's recent results (the top-N gauge).
    """
    WEBHOOK_ATTEMPTS.add(
        1, {"outcome": outcome, "status_class": status_class(status_code), "trigger": trigger}
    )
    WEBHOOK_ATTEMPT_DURATION.record(max(0.0, duration_seconds), {"outcome": outcome})
    if tenant_id:
        _recent_by_tenant.add(tenant_id, failed=outcome != OUTCOME_SUCCESS)


def record_webhook_delivered(event_type: str, latency_seconds: float) -> None:
    """An event reached an endpoint ``latency_seconds`` after the event was created."""
    WEBHOOK_DELIVERY_LATENCY.record(max(0.0, latency_seconds), {"event_type": event_type})


def record_endpoint_disabled(reason: str) -> None:
    """An endpoint was disabled (``failing``: no success for too long; ``gone``: it answered 410)."""
    WEBHOOK_ENDPOINTS_DISABLED.add(1, {"reason": reason})


def record_rate_limited(limit: str) -> None:
    """A request was refused by a per-tenant ``limit``: ``rate``, ``query_rate``, ``concurrency``,
    ``quota``."""
    RATE_LIMIT_REJECTIONS.add(1, {"limit": limit})


def record_subscription_render(recipients: int) -> None:
    """A subscription group executed and rendered one result, for ``recipients`` subscribers."""
    SUBSCRIPTION_RENDERS.add(1)
    SUBSCRIPTION_RECIPIENTS.add(recipients)


def record_outbox_reenqueued(count: int) -> None:
    """The outbox sweep enqueued ``count`` committed jobs that RQ did not hold."""
    if count > 0:
        OUTBOX_REENQUEUED.add(count)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def record_http_request(route: str, method: str, status_code: int) -> None:
    """The API answered a request: ``route`` is the matched route's template (``/downloads/{token}``),
    never the raw path; an unknown method counts as ``OTHER``."""
    method = method if method in _METHODS else "OTHER"
    HTTP_REQUESTS.add(1, {"route": route, "method": method, "code": str(status_code)})


def note_sweep(name: str) -> None:
    """The scheduler's ``name`` sweep just completed: its heartbeat."""
    _last_sweeps[name] = time.time()


def register_worker_slots(callback: Callable[[], tuple[int, int]]) -> Callable[[], None]:
    """Report a worker's job slots at each scrape: ``callback()`` returns (busy, total)."""

    def reading() -> Reading:
        busy, total = callback()
        return [(busy, {"state": "busy"}), (max(0, total - busy), {"state": "idle"})]

    return _worker_slots.register(reading)


def register_deliverer(running: Callable[[], bool]) -> Callable[[], None]:
    """Report at each scrape whether this process's webhook deliverer is running."""
    return _deliverers.register(lambda: [(1 if running() else 0, {})])


@dataclass(frozen=True)
class DeliveryBacklog:
    """Deliveries waiting for a deliverer: due now, and due for more than ``OVERDUE_SECONDS``."""

    due: int
    overdue: int


def register_webhook_backlog(callback: Callable[[], DeliveryBacklog]) -> Callable[[], None]:
    """Report the delivery backlog at each scrape (one reading feeds both gauges): due deliveries as
    ``claimcheck_queue_depth{queue="webhooks"}``, overdue ones on their own gauge."""
    read = _shared(callback)
    return _all(
        _queue_depth.register(lambda: [(read().due, {"queue": "webhooks"})]),
        _overdue.register(lambda: [(read().overdue, {})]),
    )


@dataclass(frozen=True)
class OutboxReading:
    """The committed jobs ready to run that no worker has started yet."""

    oldest_queued_seconds: float
    """How long the oldest of them has waited (0 when none)."""
    lag_seconds: float
    """How long the oldest of them that RQ does not hold has waited (0 when RQ holds them all)."""
    missing_from_queue: int
    """How many of them RQ does not hold."""


def register_outbox(callback: Callable[[], OutboxReading]) -> Callable[[], None]:
    """Report the outbox at each scrape (one reading feeds its three gauges); the scheduler does."""
    read = _shared(callback)
    return _all(
        _oldest_queued.register(lambda: [(read().oldest_queued_seconds, {})]),
        _outbox_lag.register(lambda: [(read().lag_seconds, {})]),
        _outbox_missing.register(lambda: [(read().missing_from_queue, {})]),
    )


_T = TypeVar("_T")


def _shared(fetch: Callable[[], _T], ttl_seconds: float = 1.0) -> Callable[[], _T]:
    """``fetch``, called at most once per ``ttl_seconds``: the gauges of one scrape share a reading."""
    lock = threading.Lock()
    cache: list[tuple[float, _T]] = []

    def read() -> _T:
        with lock:
            now = time.monotonic()
            if cache and now - cache[0][0] < ttl_seconds:
                return cache[0][1]
            value = fetch()
            cache[:] = [(now, value)]
            return value

    return read


def _all(*unregisters: Callable[[], None]) -> Callable[[], None]:
    def unregister() -> None:
        for each in unregisters:
            each()

    return unregister


_last_sweeps: dict[str, float] = {}
_sweeps.register(lambda: [(at, {"sweep": name}) for name, at in list(_last_sweeps.items())])

_recent_by_tenant = RecentOutcomes(TENANT_WINDOW_SECONDS)


def _tenant_reading() -> Reading:
    for tenant_id, attempts, failures in _recent_by_tenant.top(TOP_TENANTS):
        yield attempts - failures, {"tenant_id": tenant_id, "result": "success"}
        yield failures, {"tenant_id": tenant_id, "result": "failure"}


_tenant_attempts.register(_tenant_reading)
