"""Webhook endpoint rules: create, update, delete, rotate keys, test, redeliver, recover."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session

from callbacks.events import EVENT_TYPES, publish, wake_deliverers
from callbacks.keys import generate_keypair, generate_secret, public_key_for
from callbacks.models import AttemptTrigger, DeliveryStatus, SigningScheme, WebhookDelivery, WebhookEndpoint
from callbacks.repository import DeliveryRepository, EndpointRepository, EventRepository
from callbacks.ssrf import UnsafeURLError, check_url, resolve_public
from service.crypto import decrypt, encrypt, reencrypt
from service.errors import InvalidStateError, NotFoundError, QuotaExceededError, ValidationError
from service.ids import has_prefix
from service.models import utcnow
from service.settings import get_settings

DEFAULT_KEEP_OLD_SECONDS = 24 * 3600
MAX_KEEP_OLD_SECONDS = 7 * 24 * 3600
MAX_DESCRIPTION = 500


@dataclass(frozen=True)
class IssuedEndpoint:
    """An endpoint and, for V1, the whsec_ secret shown this once."""

    endpoint: WebhookEndpoint
    secret: str | None


def validate_url(url: str) -> str:
    """A URL the SSRF guard accepts now (it checks again before every send), or a VALIDATION error."""
    settings = get_settings()
    url = url.strip()
    try:
        allowed = settings.webhook_allowed_networks
        target = check_url(url, allowed_cidrs=allowed, allow_http=settings.webhook_allow_http)
        resolve_public(target.host, target.port, allowed)
    except UnsafeURLError as error:
        raise ValidationError(
            f"url refused ({error.code}): {error.message}", field=["input", "url"]
        ) from error
    return url


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
    tenant_id: str,
    *,
    url: str,
    event_types: list[str] | None,
    description: str | None,
    signing: SigningScheme,
    max_endpoints: int | None = None,
) -> IssuedEndpoint:
    """A new endpoint; QUOTA_EXCEEDED when the tenant has max_endpoints already (its plan's limit)."""
    if max_endpoints is not None and len(EndpointRepository(session, tenant_id).all()) >= max_endpoints:
        raise QuotaExceededError(
            f"this tenant already has {max_endpoints} webhook endpoints (its plan's maximum)", field=["input"]
        )
    key, public_key = _new_key(signing)
    endpoint = WebhookEndpoint(
        tenant_id=tenant_id,
        url=validate_url(url),
        event_types=validate_event_types(event_types),
        description=_validate_description(description),
        signing=signing,
        signing_keys=[{"key": encrypt(key), "expires_at": None}],
        public_key=public_key,
    )
    EndpointRepository(session, tenant_id).stage(endpoint)
    session.flush()
    return IssuedEndpoint(endpoint, key if signing is SigningScheme.V1 else None)


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


def update_endpoint(
    session: Session,
    tenant_id: str,
    endpoint_id: str,
    *,
    url: str | None,
    event_types: list[str] | None,
    description: str | None,
    enabled: bool | None,
) -> WebhookEndpoint:
    endpoint = get_endpoint(session, tenant_id, endpoint_id, for_update=True)
    if url is not None:
        endpoint.url = validate_url(url)
    if event_types is not None:
        endpoint.event_types = validate_event_types(event_types)
    if description is not None:
        endpoint.description = _validate_description(description)
    if enabled is not None and enabled != endpoint.enabled:
        endpoint.enabled = enabled
        endpoint.disabled_reason = None if enabled else "disabled by the tenant"
        endpoint.failing_since = None
    endpoint.updated_at = utcnow()
    session.add(endpoint)
    session.flush()
    return endpoint


def delete_endpoint(session: Session, tenant_id: str, endpoint_id: str) -> str:
    """Delete it with its deliveries and attempts."""
    endpoint = get_endpoint(session, tenant_id, endpoint_id, for_update=True)
    session.delete(endpoint)
    session.flush()
    return endpoint_id


def rotate_key(
    session: Session, tenant_id: str, endpoint_id: str, keep_old_for: int | None
) -> IssuedEndpoint:
    """A new signing key; the previous ones keep signing beside it for keep_old_for seconds."""
    keep = DEFAULT_KEEP_OLD_SECONDS if keep_old_for is None else keep_old_for
    if not 0 <= keep <= MAX_KEEP_OLD_SECONDS:
        raise ValidationError(
            f"keepOldForSeconds must be between 0 and {MAX_KEEP_OLD_SECONDS}", field=["keepOldForSeconds"]
        )
    endpoint = get_endpoint(session, tenant_id, endpoint_id, for_update=True)
    now = utcnow()
    old_until = (now + timedelta(seconds=keep)).isoformat()
    kept = [
        {**entry, "expires_at": min(entry["expires_at"] or old_until, old_until)}
        for entry in endpoint.signing_keys
        if entry["expires_at"] is None or datetime.fromisoformat(entry["expires_at"]) > now
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


def send_test(session: Session, tenant_id: str, endpoint_id: str) -> WebhookDelivery:
    """A `webhook.test` event for this endpoint alone."""
    endpoint = get_endpoint(session, tenant_id, endpoint_id)
    if not endpoint.enabled:
        raise InvalidStateError("the endpoint is disabled; enable it first", field=["endpointId"])
    data = {"endpoint": {"id": endpoint.id, "url": endpoint.url}, "message": "a test event from Claimcheck"}
    _, deliveries = publish(session, tenant_id, "webhook.test", data, endpoint_ids=[endpoint.id])
    session.flush()
    return deliveries[0]


def redeliver(session: Session, tenant_id: str, event_id: str, endpoint_id: str) -> WebhookDelivery:
    """Send the event to the endpoint once more, now, with the same webhook-id."""
    endpoint = get_endpoint(session, tenant_id, endpoint_id)
    if not endpoint.enabled:
        raise InvalidStateError("the endpoint is disabled; enable it first", field=["endpointId"])
    event = EventRepository(session, tenant_id).get(event_id) if has_prefix(event_id, "evt") else None
    if event is None:
        raise NotFoundError("no such webhook event", field=["eventId"])
    deliveries = DeliveryRepository(session, tenant_id)
    delivery = deliveries.for_event(event.id, endpoint.id)
    if delivery is None:
        delivery = WebhookDelivery(tenant_id=tenant_id, event_id=event.id, endpoint_id=endpoint.id)
        deliveries.stage(delivery)
    _due_now(delivery)
    session.flush()
    wake_deliverers(session)
    return delivery


def recover(session: Session, tenant_id: str, endpoint_id: str, since: datetime) -> int:
    """Send again every delivery to this endpoint that failed since `since`; how many."""
    endpoint = get_endpoint(session, tenant_id, endpoint_id)
    if not endpoint.enabled:
        raise InvalidStateError("the endpoint is disabled; enable it first", field=["endpointId"])
    failed = DeliveryRepository(session, tenant_id).failed_since(endpoint.id, since)
    for delivery in failed:
        _due_now(delivery)
    session.flush()
    if failed:
        wake_deliverers(session)
    return len(failed)


def _due_now(delivery: WebhookDelivery) -> None:
    if delivery.status != DeliveryStatus.PENDING:
        delivery.status = DeliveryStatus.PENDING
        delivery.next_trigger = AttemptTrigger.MANUAL
    delivery.next_attempt_at = utcnow()
    delivery.updated_at = utcnow()


def reencrypt_all(session: Session, *, batch: int = 500) -> int:
    """Re-encrypt every endpoint's signing keys with the newest ENCRYPTION_KEYS key (all tenants);
    how many endpoints. Afterwards older keys can be dropped from ENCRYPTION_KEYS."""
    from sqlmodel import col, select

    count = 0
    last_id = ""
    while True:
        statement = (
            select(WebhookEndpoint)
            .where(col(WebhookEndpoint.id) > last_id)
            .order_by(col(WebhookEndpoint.id))
            .limit(batch)
            .with_for_update()
        )
        rows = list(session.exec(statement))
        if not rows:
            return count
        for endpoint in rows:
            endpoint.signing_keys = [
                {**entry, "key": reencrypt(entry["key"])} for entry in endpoint.signing_keys
            ]
            session.add(endpoint)
        session.flush()
        count += len(rows)
        last_id = rows[-1].id
