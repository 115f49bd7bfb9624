"""Webhook rules: publishing events to the endpoints that want them; endpoints (create, update,
delete, rotate keys, test, redeliver, recover); and the reads the API and exports need."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, LiteralString

from sqlmodel import Session

from callbacks.keys import generate_keypair, generate_secret, public_key_for
from observability.metrics import record_endpoint_disabled
from observability.tracing import inject
from service.crypto import decrypt, encrypt, reencrypt
from service.db import PendingRead, Statement, transaction_memo
from service.errors import (
    ForbiddenError,
    InvalidStateError,
    NotFoundError,
    QuotaExceededError,
    ValidationError,
)
from service.ids import has_prefix, new_id
from service.models import construct, utcnow
from service.principal import Principal
from service.redis import RedisRead
from service.settings import get_settings
from service.tenants.service import check_rate
from service.webhooks import repository
from service.webhooks.events import (
    CATALOG,
    ENDPOINT_DISABLED,
    ENDPOINT_FAILING,
    ENDPOINT_RECOVERED,
    EVENT_TYPES,
    JOB_EVENT_TYPES,
    WEBHOOK_TEST,
)
from service.webhooks.listeners import ask_listening, is_listening
from service.webhooks.models import (
    AttemptTrigger,
    DeliveryStatus,
    SigningScheme,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from service.webhooks.repository import (
    DeliveryFilter,
    DeliveryLogRepository,
    DeliveryRepository,
    EndpointRepository,
    EventRepository,
)
from service.webhooks.retry import (
    MAX_SCHEDULE_STEP_SECONDS,
    MAX_SCHEDULE_STEPS,
    MAX_TIMEOUT_SECONDS,
    MIN_TIMEOUT_SECONDS,
)
from service.webhooks.ssrf import UnsafeURLError, check_url, resolve_within

log = logging.getLogger(__name__)

DEFAULT_KEEP_OLD_SECONDS = 24 * 3600
MAX_KEEP_OLD_SECONDS = 7 * 24 * 3600
MAX_DESCRIPTION = 500
MAX_DELIVERIES = 100
JOBS_READ = "jobs:read"
WEBHOOKS_MANAGE = "webhooks:manage"


MAX_RATE_PER_SECOND = 1000.0
MIN_RATE_PER_SECOND = 0.01


@dataclass(frozen=True)
class DeliveryPolicy:
    """An endpoint's own delivery settings; None leaves a setting as it is (on create: the default),
    and 0 (or an empty schedule) puts it back to the global default."""

    rate_limit_per_second: float | None = None
    timeout_seconds: float | None = None
    retry_schedule: list[float] | None = None


def _apply_policy(endpoint: WebhookEndpoint, policy: DeliveryPolicy) -> None:
    """Check the policy's bounds (VALIDATION naming the field) and set it on the endpoint."""
    rate, timeout, schedule = policy.rate_limit_per_second, policy.timeout_seconds, policy.retry_schedule
    if rate is not None:
        if rate != 0 and not MIN_RATE_PER_SECOND <= rate <= MAX_RATE_PER_SECOND:
            raise ValidationError(
                f"rateLimitPerSecond must be between {MIN_RATE_PER_SECOND} and {MAX_RATE_PER_SECOND:g}"
                " (0: no limit)",
                field=["input", "rateLimitPerSecond"],
            )
        endpoint.rate_limit_per_second = rate or None
    if timeout is not None:
        if timeout != 0 and not MIN_TIMEOUT_SECONDS <= timeout <= MAX_TIMEOUT_SECONDS:
            raise ValidationError(
                f"timeoutSeconds must be between {MIN_TIMEOUT_SECONDS:g} and {MAX_TIMEOUT_SECONDS:g}"
                " (0: the default)",
                field=["input", "timeoutSeconds"],
            )
        endpoint.timeout_seconds = timeout or None
    if schedule is not None:
        if len(schedule) > MAX_SCHEDULE_STEPS or any(
            not 0 <= step <= MAX_SCHEDULE_STEP_SECONDS for step in schedule
        ):
            raise ValidationError(
                f"retrySchedule takes at most {MAX_SCHEDULE_STEPS} delays of 0 to"
                f" {MAX_SCHEDULE_STEP_SECONDS:g} seconds ([]: the default)",
                field=["input", "retrySchedule"],
            )
        endpoint.retry_schedule = [float(step) for step in schedule] or None


@dataclass(frozen=True)
class IssuedEndpoint:
    """An endpoint and, for V1, the whsec_ secret shown this once."""

    endpoint: WebhookEndpoint
    secret: str | None


@dataclass(frozen=True)
class DeliveryView:
    """A delivery as the API shows it: with its event's type and its attempts, oldest first."""

    delivery: WebhookDelivery
    event_type: str
    attempts: list[WebhookAttempt]


# --- publishing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    """An event written for some endpoints, and its deliveries' ids (in the endpoints' id order)."""

    event_id: str
    delivery_ids: list[str]


def publish(
    session: Session,
    tenant_id: str,
    event_type: str,
    data: dict[str, Any] | Callable[[], dict[str, Any]],
    *,
    job_id: str | None = None,
    artifact_key: str | None = None,
    endpoint_ids: list[str] | None = None,
) -> Published | None:
    """Write the event and one pending delivery per enabled endpoint that wants it (or the given ones),
    in the caller's transaction; None when no endpoint wants it and no listener of the tenant's is
    streaming (service.webhooks.listeners; then the event is written with no delivery). `artifact_key`
    names the file each attempt signs a fresh downloadUrl for; `data` may be a function, called only
    when the event is written. Deliverers are woken once the transaction commits.

    A transaction reads the tenant's endpoints once however many events it publishes (a job's
    transition records several), and writes each event with its deliveries in one statement."""
    targets = [
        endpoint_id
        for endpoint_id, types in _enabled_endpoints(session, tenant_id)
        if (endpoint_id in endpoint_ids if endpoint_ids is not None else not types or event_type in types)
    ]
    if not targets and (endpoint_ids is not None or not _listening(session, tenant_id)):
        return None
    event = construct(  # written in plain SQL: a row object made without SQLModel's per-field setting
        WebhookEvent,
        tenant_id=tenant_id,
        type=event_type,
        data=data() if callable(data) else data,
        job_id=job_id,
        artifact_key=artifact_key,
        trace_context=inject(),
    )
    deliveries = [(new_id("whd"), endpoint_id) for endpoint_id in targets]
    repository.insert_event(session, event, deliveries)
    if deliveries:
        _wake_deliverers_once(session)
    return Published(event.id, [delivery_id for delivery_id, _ in deliveries])


def endpoints_statement(tenant: LiteralString, parameters: Mapping[str, Any]) -> Statement:
    """The tenant's enabled endpoints and filters in plain SQL, for read_pipelined beside other reads:
    `tenant` is SQL giving the tenant's id (with its parameters); remember_endpoints() takes its rows."""
    return repository.ENABLED_FILTERS.format(tenant=tenant), parameters


def remember_endpoints(session: Session, tenant_id: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """What endpoints_statement read, for this transaction's publishes."""
    _endpoints_cache(session)[tenant_id] = _filters((row["id"], row["event_types"]) for row in rows)


def endpoints_read(session: Session, tenant_id: str) -> PendingRead | None:
    """endpoints_statement for a known tenant, as a read to run along others in one round trip
    (service.db.read_together); None when this transaction has read them already."""
    by_tenant = _endpoints_cache(session)
    if tenant_id in by_tenant:
        return None

    def keep(rows: list[tuple[Any, ...]]) -> None:
        by_tenant[tenant_id] = _filters((endpoint_id, types) for endpoint_id, types in rows)

    return endpoints_statement("%(tenant_id)s", {"tenant_id": tenant_id}), keep


def _filters(rows: Iterable[tuple[str, list[str] | None]]) -> list[tuple[str, list[str]]]:
    return [(endpoint_id, list(types or [])) for endpoint_id, types in rows]


_ENDPOINTS = "webhooks.enabled_endpoints"
_LISTENING = "webhooks.listening"
_WOKEN = "webhooks.woken"


def _enabled_endpoints(session: Session, tenant_id: str) -> list[tuple[str, list[str]]]:
    """The tenant's enabled endpoints and their filters, read once per transaction."""
    by_tenant = _endpoints_cache(session)
    if tenant_id not in by_tenant:
        by_tenant[tenant_id] = EndpointRepository(session, tenant_id).enabled_filters()
    return by_tenant[tenant_id]


def _endpoints_cache(session: Session) -> dict[str, list[tuple[str, list[str]]]]:
    """This transaction's endpoints by tenant."""
    return transaction_memo(session, _ENDPOINTS)


def listening_read(session: Session, tenant_id: str) -> RedisRead | None:
    """The listener check publish() makes, to send along other Redis commands in one round trip;
    None when this transaction has asked already."""
    by_tenant = _listening_cache(session)
    if tenant_id in by_tenant:
        return None

    def keep(answer: Any) -> None:
        by_tenant[tenant_id] = bool(answer)

    return (lambda pipeline: ask_listening(pipeline, tenant_id)), keep


def _listening(session: Session, tenant_id: str) -> bool:
    """Whether a listener of the tenant's streams its events, asked of Redis once per transaction."""
    by_tenant = _listening_cache(session)
    if tenant_id not in by_tenant:
        by_tenant[tenant_id] = is_listening(tenant_id)
    return by_tenant[tenant_id]


def _listening_cache(session: Session) -> dict[str, bool]:
    """This transaction's answers of whether a tenant's listener streams."""
    return transaction_memo(session, _LISTENING)


def _forget_endpoints(session: Session) -> None:
    """Endpoints changed in this transaction: the next publish reads them again."""
    session.info.pop(_ENDPOINTS, None)


def _wake_deliverers_once(session: Session) -> None:
    """One NOTIFY per transaction (or savepoint, which may be rolled back with its NOTIFY)."""
    transaction = session.get_nested_transaction() or session.get_transaction()
    if session.info.get(_WOKEN) is not transaction:
        repository.wake_deliverers(session)
        session.info[_WOKEN] = transaction


def forget_artifact(session: Session, job_id: str) -> None:
    """The job's file is gone: later attempts of its events carry no downloadUrl."""
    repository.forget_artifact(session, job_id)


def disable(session: Session, endpoint: WebhookEndpoint, reason: str, *, gone: bool = False) -> None:
    """Disable an endpoint and tell the tenant's other endpoints (an ``endpoint.disabled`` event)."""
    log.warning("disabling webhook endpoint %s: %s", endpoint.id, reason)
    record_endpoint_disabled("gone" if gone else "failing")
    endpoint.enabled = False
    endpoint.disabled_reason = reason
    endpoint.updated_at = utcnow()
    session.add(endpoint)
    session.flush()
    _forget_endpoints(session)
    data = ENDPOINT_DISABLED.build(
        endpoint={"id": endpoint.id, "url": endpoint.url, "disabled_reason": reason}
    )
    publish(session, endpoint.tenant_id, ENDPOINT_DISABLED.name, data)


def _tell_others(
    session: Session, tenant_id: str, endpoint_id: str, event_type: str, data: dict[str, Any]
) -> None:
    """Publish an operational event about one endpoint to the tenant's other endpoints that want it."""
    others = [
        other
        for other, types in _enabled_endpoints(session, tenant_id)
        if other != endpoint_id and (not types or event_type in types)
    ]
    if others:
        publish(session, tenant_id, event_type, data, endpoint_ids=others)


def recovered(
    session: Session, tenant_id: str, endpoint_id: str, url: str, failing_since: datetime, at: datetime
) -> None:
    """An endpoint reported failing succeeded again: `endpoint.recovered` to the tenant's others."""
    data = ENDPOINT_RECOVERED.build(
        endpoint={"id": endpoint_id, "url": url, "failing_since": failing_since, "recovered_at": at}
    )
    _tell_others(session, tenant_id, endpoint_id, ENDPOINT_RECOVERED.name, data)


ALERT_BATCH = 100


def alert_failing(session: Session) -> int:
    """The scheduler's sweep over failing endpoints: each one failing past the next of
    WEBHOOK_FAILING_ALERT_SECONDS sends `endpoint.failing` to the tenant's other endpoints (once per
    threshold; the latest only, when several were crossed at once), and one failing past
    WEBHOOK_DISABLE_AFTER_SECONDS is disabled even if no attempt is due. How many endpoints acted on."""
    settings = get_settings()
    steps = sorted(settings.webhook_failing_alert_seconds)
    now = utcnow()
    endpoints = repository.failing_endpoints(
        session, steps=len(steps) + 1, first_due=steps[0], limit=ALERT_BATCH
    )
    for endpoint in endpoints:
        assert endpoint.failing_since is not None
        failing_for = (now - endpoint.failing_since).total_seconds()
        if failing_for > settings.webhook_disable_after_seconds:
            endpoint.failing_alerts = len(steps) + 1
            disable(session, endpoint, "no successful delivery for too long")
            continue
        crossed = sum(1 for step in steps if step <= failing_for)
        if crossed <= endpoint.failing_alerts:
            continue
        endpoint.failing_alerts = crossed
        session.add(endpoint)
        data = ENDPOINT_FAILING.build(
            endpoint={
                "id": endpoint.id,
                "url": endpoint.url,
                "failing_since": endpoint.failing_since,
                "last_success_at": endpoint.last_success_at,
                "last_error": endpoint.last_error,
            },
            failing_for_seconds=int(steps[crossed - 1]),
            disables_at=endpoint.failing_since + timedelta(seconds=settings.webhook_disable_after_seconds),
        )
        log.warning("webhook endpoint %s failing for %d s", endpoint.id, int(failing_for))
        _tell_others(session, endpoint.tenant_id, endpoint.id, ENDPOINT_FAILING.name, data)
    session.flush()
    return len(endpoints)


def prune_old(session: Session) -> int:
    """One batch of retention: events older than WEBHOOK_RETENTION_DAYS (at least a day, so a receiver's
    dedupe by webhook-id and a redelivery always have 24 h) with no pending delivery, with their
    deliveries and attempts; how many events (a full batch: call again)."""
    settings = get_settings()
    cutoff = utcnow() - timedelta(days=max(settings.webhook_retention_days, 1.0))
    deleted = repository.prune_events(session, cutoff=cutoff, limit=settings.webhook_retention_batch)
    if deleted:
        log.info("webhook retention deleted %d event(s) with their deliveries", deleted)
    return deleted


def keys_in_use(signing_keys: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """The signing keys (encrypted) that sign now: the newest, and older ones inside their overlap."""
    return [
        entry
        for entry in signing_keys
        if entry["expires_at"] is None or datetime.fromisoformat(entry["expires_at"]) > now
    ]


# --- endpoints -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckedURL:
    """An endpoint URL the SSRF guard accepted, its host resolved (the guard checks again before every
    attempt: DNS may change)."""

    url: str


def check_endpoint_url(url: str) -> CheckedURL:
    """The URL if the SSRF guard accepts it now, else a VALIDATION error. Call it before the request's
    session is used: resolving the host may take up to WEBHOOK_RESOLVE_TIMEOUT_SECONDS, and no pooled
    connection or transaction should wait on DNS."""
    settings = get_settings()
    url = url.strip()
    try:
        allowed = settings.webhook_allowed_networks
        target = check_url(url, allowed_cidrs=allowed, allow_http=settings.webhook_allow_http)
        resolve_within(target.host, target.port, allowed, timeout=settings.webhook_resolve_timeout_seconds)
    except UnsafeURLError as error:
        raise ValidationError(
            f"url refused ({error.code}): {error.message}", field=["input", "url"]
        ) from error
    return CheckedURL(url)


def receives_job_events(event_types: list[str]) -> bool:
    """Whether an endpoint with this filter gets job events ([] means every type)."""
    return not event_types or any(event_type in JOB_EVENT_TYPES for event_type in event_types)


def _require_jobs_read(principal: Principal, doing: str, field: list[str]) -> None:
    """Job data goes only to a URL chosen by a key that may read jobs (FORBIDDEN otherwise)."""
    if JOBS_READ not in principal.scopes:
        raise ForbiddenError(
            f"{doing} needs the {JOBS_READ} scope as well as {WEBHOOKS_MANAGE}: job events carry job data",
            field=field,
        )


def validate_event_types(event_types: list[str] | None) -> list[str]:
    """A sorted, de-duplicated filter of known types ([] means every type)."""
    chosen = sorted(set(event_types or []))
    unknown = [event_type for event_type in chosen if event_type not in EVENT_TYPES]
    if unknown:
        known = ", ".join(EVENT_TYPES)
        raise ValidationError(f"unknown event types {unknown}; known: {known}", field=["input", "eventTypes"])
    return chosen


def _validate_description(description: str | None) -> str | None:
    if description is not None and len(description) > MAX_DESCRIPTION:
        raise ValidationError(f"description is longer than {MAX_DESCRIPTION}", field=["input", "description"])
    return description


def _new_key(signing: SigningScheme) -> tuple[str, str | None]:
    """(the private signing key, the public key for V1A)."""
    if signing is SigningScheme.V1A:
        pair = generate_keypair()
        return pair.private_key, pair.public_key
    return generate_secret(), None


def create_endpoint(
    session: Session,
    principal: Principal,
    *,
    url: CheckedURL,
    event_types: list[str] | None,
    description: str | None,
    signing: SigningScheme,
    policy: DeliveryPolicy | None = None,
) -> IssuedEndpoint:
    """A new endpoint. RATE_LIMITED past the tenant's rate; FORBIDDEN when it would get job events
    and the key lacks jobs:read; QUOTA_EXCEEDED when the tenant has its plan's max_webhook_endpoints."""
    tenant_id = principal.tenant_id
    limits = check_rate(session, principal)
    chosen = validate_event_types(event_types)
    if receives_job_events(chosen):
        _require_jobs_read(principal, "an endpoint that gets job events", ["input", "eventTypes"])
    endpoints = EndpointRepository(session, tenant_id)
    if endpoints.count() >= limits.max_webhook_endpoints:
        raise QuotaExceededError(
            f"this tenant already has {limits.max_webhook_endpoints} webhook endpoints (its plan's maximum)",
            field=["input"],
        )
    key, public_key = _new_key(signing)
    endpoint = WebhookEndpoint(
        tenant_id=tenant_id,
        url=url.url,
        event_types=chosen,
        description=_validate_description(description),
        signing=signing,
        signing_keys=[{"key": encrypt(key), "expires_at": None}],
        public_key=public_key,
    )
    _apply_policy(endpoint, policy or DeliveryPolicy())
    endpoints.stage(endpoint)
    session.flush()
    _forget_endpoints(session)
    return IssuedEndpoint(endpoint, key if signing is SigningScheme.V1 else None)


def list_endpoints(session: Session, tenant_id: str) -> list[WebhookEndpoint]:
    """The tenant's endpoints, oldest first."""
    return list(EndpointRepository(session, tenant_id).all())


def find_endpoint(session: Session, tenant_id: str, endpoint_id: str) -> WebhookEndpoint | None:
    """The tenant's endpoint, or None (another tenant's id included)."""
    if not has_prefix(endpoint_id, "whe"):
        return None
    return EndpointRepository(session, tenant_id).get(endpoint_id)


def count_endpoints(session: Session, tenant_id: str) -> int:
    return EndpointRepository(session, tenant_id).count()


def get_endpoint(
    session: Session, tenant_id: str, endpoint_id: str, *, for_update: bool = False
) -> WebhookEndpoint:
    """The tenant's endpoint, or NOT_FOUND (another tenant's id included)."""
    endpoint = (
        EndpointRepository(session, tenant_id).get(endpoint_id, for_update=for_update)
        if has_prefix(endpoint_id, "whe")
        else None
    )
    if endpoint is None:
        raise NotFoundError("no such webhook endpoint", field=["id"])
    return endpoint


def _enabled_endpoint(session: Session, tenant_id: str, endpoint_id: str) -> WebhookEndpoint:
    """The tenant's endpoint, which must be enabled to send to it (else INVALID_STATE)."""
    endpoint = get_endpoint(session, tenant_id, endpoint_id)
    if not endpoint.enabled:
        raise InvalidStateError("the endpoint is disabled; enable it first", field=["endpointId"])
    return endpoint


def update_endpoint(
    session: Session,
    principal: Principal,
    endpoint_id: str,
    *,
    url: CheckedURL | None,
    event_types: list[str] | None,
    description: str | None,
    enabled: bool | None,
    policy: DeliveryPolicy | None = None,
) -> WebhookEndpoint:
    """Change what is given. Re-pointing an endpoint that gets job events, or making one get them,
    needs jobs:read (FORBIDDEN otherwise); describing, enabling or disabling it does not."""
    check_rate(session, principal)
    endpoint = get_endpoint(session, principal.tenant_id, endpoint_id, for_update=True)
    new_url = url.url if url is not None and url.url != endpoint.url else None
    chosen = validate_event_types(event_types) if event_types is not None else None
    new_types = chosen if chosen is not None and chosen != endpoint.event_types else None
    if (new_url or new_types is not None) and receives_job_events(
        endpoint.event_types if new_types is None else new_types
    ):
        if new_url:
            _require_jobs_read(
                principal, "changing the URL of an endpoint that gets job events", ["input", "url"]
            )
        _require_jobs_read(principal, "an endpoint that gets job events", ["input", "eventTypes"])
    if new_url is not None:
        endpoint.url = new_url
    if new_types is not None:
        endpoint.event_types = new_types
    if description is not None:
        endpoint.description = _validate_description(description)
    _apply_policy(endpoint, policy or DeliveryPolicy())
    if enabled is not None and enabled != endpoint.enabled:
        endpoint.enabled = enabled
        endpoint.disabled_reason = None if enabled else "disabled by the tenant"
        endpoint.failing_since = None
        endpoint.failing_alerts = 0
    endpoint.updated_at = utcnow()
    session.add(endpoint)
    session.flush()
    _forget_endpoints(session)
    return endpoint


def delete_endpoint(session: Session, principal: Principal, endpoint_id: str) -> str:
    """Delete it with its deliveries and attempts."""
    check_rate(session, principal)
    endpoint = get_endpoint(session, principal.tenant_id, endpoint_id, for_update=True)
    session.delete(endpoint)
    session.flush()
    _forget_endpoints(session)
    return endpoint_id


def rotate_key(
    session: Session, principal: Principal, endpoint_id: str, keep_old_for: int | None
) -> IssuedEndpoint:
    """A new signing key; the previous ones keep signing beside it for keep_old_for seconds."""
    check_rate(session, principal)
    keep = DEFAULT_KEEP_OLD_SECONDS if keep_old_for is None else keep_old_for
    if not 0 <= keep <= MAX_KEEP_OLD_SECONDS:
        raise ValidationError(
            f"keepOldForSeconds must be between 0 and {MAX_KEEP_OLD_SECONDS}", field=["keepOldForSeconds"]
        )
    endpoint = get_endpoint(session, principal.tenant_id, endpoint_id, for_update=True)
    now = utcnow()
    old_until = (now + timedelta(seconds=keep)).isoformat()
    kept = [
        {**entry, "expires_at": min(entry["expires_at"] or old_until, old_until)}
        for entry in keys_in_use(endpoint.signing_keys, now)
    ]
    signing = SigningScheme(endpoint.signing)
    key, public_key = _new_key(signing)
    endpoint.signing_keys = [{"key": encrypt(key), "expires_at": None}, *(kept if keep else [])]
    endpoint.public_key = public_key
    endpoint.updated_at = now
    session.add(endpoint)
    session.flush()
    return IssuedEndpoint(endpoint, key if signing is SigningScheme.V1 else None)


def current_public_key(endpoint: WebhookEndpoint) -> str | None:
    """The whpk_ key receivers of a V1A endpoint verify with."""
    if endpoint.signing != SigningScheme.V1A:
        return None
    return endpoint.public_key or public_key_for(decrypt(endpoint.signing_keys[0]["key"]))


@dataclass(frozen=True)
class Triggered:
    """A sample event sent: its id (None when no endpoint wanted it and no listener streams) and the
    number of endpoints it goes to."""

    event_id: str | None
    endpoints: int


def trigger_sample(session: Session, principal: Principal, event_type: str) -> Triggered:
    """Publish the catalog's example of this type as an event of the tenant's: to every enabled endpoint
    that wants the type and to running listeners (`claimcheck webhooks trigger`). Its data is the
    example's, none of the tenant's jobs, so webhooks:manage suffices even for job events."""
    check_rate(session, principal.tenant_id)
    if event_type not in CATALOG:
        known = ", ".join(CATALOG)
        raise ValidationError(f"unknown event type {event_type!r}; known: {known}", field=["eventType"])
    example = CATALOG[event_type].example.model_dump(mode="json", by_alias=True, exclude_unset=True)
    published = publish(session, principal.tenant_id, event_type, example)
    if published is None:
        return Triggered(None, 0)
    return Triggered(published.event_id, len(published.delivery_ids))


def send_test(session: Session, principal: Principal, endpoint_id: str) -> DeliveryView:
    """A `webhook.test` event for this endpoint alone."""
    check_rate(session, principal)
    endpoint = _enabled_endpoint(session, principal.tenant_id, endpoint_id)
    data = WEBHOOK_TEST.build(
        endpoint={"id": endpoint.id, "url": endpoint.url}, message="a test event from Claimcheck"
    )
    published = publish(session, principal.tenant_id, WEBHOOK_TEST.name, data, endpoint_ids=[endpoint.id])
    assert published is not None  # the endpoint is enabled
    rows = DeliveryRepository(session, principal.tenant_id).by_ids(published.delivery_ids)
    return delivery_views(session, principal.tenant_id, list(rows))[0]


def redeliver(session: Session, principal: Principal, event_id: str, endpoint_id: str) -> DeliveryView:
    """Send the event to the endpoint once more, now, with the same webhook-id (a job event: only for a
    key with jobs:read)."""
    tenant_id = principal.tenant_id
    check_rate(session, principal)
    endpoint = _enabled_endpoint(session, tenant_id, endpoint_id)
    event = EventRepository(session, tenant_id).get(event_id) if has_prefix(event_id, "evt") else None
    if event is None:
        raise NotFoundError("no such webhook event", field=["eventId"])
    if event.type in JOB_EVENT_TYPES:
        _require_jobs_read(principal, "redelivering a job event", ["eventId"])
    deliveries = DeliveryRepository(session, tenant_id)
    delivery = deliveries.for_event(event.id, endpoint.id)
    if delivery is None:
        delivery = WebhookDelivery(
            tenant_id=tenant_id,
            event_id=event.id,
            endpoint_id=endpoint.id,
            job_id=event.job_id,
            event_type=event.type,
        )
        deliveries.stage(delivery)
    _due_now(delivery)
    session.flush()
    repository.wake_deliverers(session)
    return delivery_views(session, tenant_id, [delivery])[0]


def recover(session: Session, principal: Principal, endpoint_id: str, since: datetime) -> int:
    """Send again every delivery to this endpoint that failed since `since`; how many. Job events among
    them need a key with jobs:read (FORBIDDEN otherwise, and nothing is sent)."""
    tenant_id = principal.tenant_id
    check_rate(session, principal)
    endpoint = _enabled_endpoint(session, tenant_id, endpoint_id)
    deliveries = DeliveryRepository(session, tenant_id)
    failed = deliveries.failed_since(endpoint.id, since)
    types = deliveries.event_types([delivery.event_id for delivery in failed])
    if any(event_type in JOB_EVENT_TYPES for event_type in types.values()):
        _require_jobs_read(principal, "recovering job events", ["endpointId"])
    for delivery in failed:
        _due_now(delivery)
    session.flush()
    if failed:
        repository.wake_deliverers(session)
    return len(failed)


def _due_now(delivery: WebhookDelivery) -> None:
    if delivery.status != DeliveryStatus.PENDING:
        delivery.status = DeliveryStatus.PENDING
        delivery.next_trigger = AttemptTrigger.MANUAL
    delivery.next_attempt_at = utcnow()
    delivery.updated_at = utcnow()


# --- reads ---------------------------------------------------------------------------------------


def recent_deliveries(
    session: Session, tenant_id: str, endpoint_id: str, *, first: int, status: DeliveryStatus | None
) -> list[DeliveryView]:
    """The endpoint's newest deliveries (at most MAX_DELIVERIES), with their attempts."""
    if not 0 <= first <= MAX_DELIVERIES:
        raise ValidationError(f"first must be between 0 and {MAX_DELIVERIES}", field=["first"])
    rows = DeliveryRepository(session, tenant_id).recent(
        endpoint_id, first=first, status=status.value if status else None
    )
    return delivery_views(session, tenant_id, list(rows))


def delivery_views(session: Session, tenant_id: str, rows: list[WebhookDelivery]) -> list[DeliveryView]:
    """Deliveries with their attempts and event types, in two queries."""
    if not rows:
        return []
    repository_ = DeliveryRepository(session, tenant_id)
    attempts: dict[str, list[WebhookAttempt]] = {row.id: [] for row in rows}
    for attempt in repository_.attempts(list(attempts)):
        attempts[attempt.delivery_id].append(attempt)
    types = repository_.event_types([row.event_id for row in rows])
    return [DeliveryView(row, types.get(row.event_id, ""), attempts[row.id]) for row in rows]


@dataclass(frozen=True)
class DeliveryLog:
    """A page of the tenant's delivery log, newest first."""

    deliveries: list[DeliveryView]
    job_ids: dict[str, str | None]
    """Delivery id -> the job its event is about."""
    has_more: bool


def delivery_log(
    session: Session,
    tenant_id: str,
    *,
    first: int,
    before_id: str | None = None,
    endpoint_id: str | None = None,
    status: DeliveryStatus | None = None,
    event_type: str | None = None,
    job_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> DeliveryLog:
    """The tenant's deliveries with their attempts, newest first, filtered; at most `first`, older than
    `before_id` (the last one of the previous page)."""
    if not 1 <= first <= MAX_DELIVERIES:
        raise ValidationError(f"first must be between 1 and {MAX_DELIVERIES}", field=["first"])
    if before_id is not None and not has_prefix(before_id, "whd"):
        raise ValidationError("before is not a delivery id", field=["before"])
    if event_type is not None and event_type not in EVENT_TYPES:
        raise ValidationError(f"unknown event type {event_type!r}", field=["eventType"])
    where = DeliveryFilter(
        endpoint_id=endpoint_id,
        status=status.value if status else None,
        event_type=event_type,
        job_id=job_id,
        since=since,
        until=until,
    )
    rows = DeliveryLogRepository(session, tenant_id).page(where, first=first, before_id=before_id)
    shown = rows[:first]
    views = delivery_views(session, tenant_id, [delivery for delivery, _, _ in shown])
    job_ids = {delivery.id: job for delivery, _, job in shown}
    return DeliveryLog(deliveries=views, job_ids=job_ids, has_more=len(rows) > first)


def events_by_id(session: Session, tenant_id: str, event_ids: list[str]) -> dict[str, WebhookEvent]:
    """The tenant's events of these ids (what deliveries carry), by id."""
    if not event_ids:
        return {}
    return {event.id: event for event in EventRepository(session, tenant_id).by_ids(event_ids)}


def count_deliveries(session: Session, tenant_id: str, since: datetime | None) -> int:
    return DeliveryRepository(session, tenant_id).count_since(since)


def delivery_history(session: Session, tenant_id: str, since: datetime | None) -> Iterator[dict[str, Any]]:
    """The tenant's deliveries since a time as export rows, oldest first, streamed."""
    for delivery, event_type in DeliveryRepository(session, tenant_id).history(since):
        yield {
            "record": "webhook_delivery",
            "id": delivery.id,
            "created_at": delivery.created_at.isoformat(),
            "status": delivery.status,
            "event_id": delivery.event_id,
            "event_type": event_type,
            "endpoint_id": delivery.endpoint_id,
            "attempts": delivery.attempt_count,
        }


# --- operators -----------------------------------------------------------------------------------


def reencrypt_all(session: Session, *, batch: int = 500) -> int:
    """Re-encrypt every endpoint's signing keys with the newest ENCRYPTION_KEYS key (all tenants);
    how many endpoints. Afterwards older keys can be dropped from ENCRYPTION_KEYS."""
    count = 0
    last_id = ""
    while rows := repository.endpoints_after(session, last_id, batch):
        for endpoint in rows:
            endpoint.signing_keys = [
                {**entry, "key": reencrypt(entry["key"])} for entry in endpoint.signing_keys
            ]
            session.add(endpoint)
        session.flush()
        count += len(rows)
        last_id = rows[-1].id
    return count
