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
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client import start_http_server

log = logging.getLogger(__name__)

METER_NAME = "claimcheck"

# Seconds: a job runs from well under a second to tens of minutes; waits and attempts are shorter.
JOB_SECONDS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
WAIT_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
ATTEMPT_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30)
DELIVERY_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200, 36000, 86400, 432000)

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

QueueDepthCallback = Callable[[], Mapping[str, float]]
_queue_depth_callbacks: list[QueueDepthCallback] = []


def _observe_queue_depth(_options: CallbackOptions) -> Iterable[Observation]:
    observations: list[Observation] = []
    for callback in list(_queue_depth_callbacks):
        try:
            depths = callback()
        except Exception:
            log.warning("queue depth callback %r failed", callback, exc_info=True)
            continue
        observations.extend(Observation(depth, {"queue": queue}) for queue, depth in depths.items())
    return observations


QUEUE_DEPTH = _meter.create_observable_gauge(
    "claimcheck.queue.depth",
    callbacks=[_observe_queue_depth],
    unit="{item}",
    description="Items waiting, by queue (jobs: RQ's queue; webhooks: deliveries due), read at scrape time",
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
        return provider


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> tuple[Any, threading.Thread]:  # noqa: S104
    """Serve the scrape on its own port from a daemon thread (the api, worker and scheduler processes).

    Returns prometheus_client's (server, thread); ``server.shutdown()`` stops it.
    """
    server, thread = start_http_server(port, addr=addr)
    log.info("metrics on http://%s:%d/metrics", addr, server.server_port)
    return server, thread


# --- recording -----------------------------------------------------------------------------------


def _status(status: str) -> str:
    return str(status).lower()


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


def register_queue_depth(callback: QueueDepthCallback) -> Callable[[], None]:
    """Report queue depths at each scrape: ``callback()`` returns ``{queue_name: items_waiting}``.

    Register it in one kind of process (the worker) so dashboards do not count a queue twice.
    Returns a function that unregisters it.
    """
    _queue_depth_callbacks.append(callback)

    def unregister() -> None:
        if callback in _queue_depth_callbacks:
            _queue_depth_callbacks.remove(callback)

    return unregister


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
) -> None:
    """One webhook attempt ended (``outcome`` from ``attempt_outcome``; ``trigger``: scheduled, manual)."""
    WEBHOOK_ATTEMPTS.add(
        1, {"outcome": outcome, "status_class": status_class(status_code), "trigger": trigger}
    )
    WEBHOOK_ATTEMPT_DURATION.record(max(0.0, duration_seconds), {"outcome": outcome})


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
