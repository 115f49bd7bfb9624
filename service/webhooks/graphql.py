"""GraphQL for webhooks: endpoints with their recent deliveries, the management mutations, and the
webhookEvents subscription."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from datetime import datetime
from typing import TypeVar, cast

import strawberry
from strawberry.scalars import JSON

from service.errors import ClaimcheckError, QuotaExceededError
from service.graphql_base import (
    DeletePayload,
    GraphQLInfo,
    UserError,
    graphql_error,
    or_graphql_error,
    require,
    run_mutation,
)
from service.settings import get_settings
from service.webhooks import service, streaming
from service.webhooks.catalog import event_catalog
from service.webhooks.models import DeliveryStatus as DeliveryStatusValue
from service.webhooks.models import SigningScheme as SigningSchemeValue
from service.webhooks.models import WebhookEndpoint as EndpointRow

T = TypeVar("T")

SCOPE = "webhooks:manage"
DEFAULT_DELIVERIES = 20

SigningScheme = strawberry.enum(SigningSchemeValue, name="SigningScheme")
DeliveryStatus = strawberry.enum(DeliveryStatusValue, name="DeliveryStatus")


@strawberry.type
class WebhookAttempt:
    at: datetime
    status_code: int | None
    duration_ms: int
    error: str | None
    response_body: str | None = strawberry.field(description="The first 4 KiB of the receiver's answer.")
    trigger: str = strawberry.field(description="scheduled | manual")
    request_headers: JSON | None = strawberry.field(description="The headers sent (the body is the event's).")
    response_headers: JSON | None = strawberry.field(description="The headers of the receiver's answer.")


@strawberry.type
class WebhookDelivery:
    id: strawberry.ID
    event_id: strawberry.ID
    event_type: str
    status: DeliveryStatus  # type: ignore[valid-type]
    next_attempt_at: datetime | None
    attempts: list[WebhookAttempt]
    endpoint_id: strawberry.ID
    job_id: strawberry.ID | None = strawberry.field(description="The job the event is about, if any.")
    created_at: datetime

    @classmethod
    def from_view(cls, view: service.DeliveryView) -> WebhookDelivery:
        row = view.delivery
        return cls(
            id=strawberry.ID(row.id),
            event_id=strawberry.ID(row.event_id),
            endpoint_id=strawberry.ID(row.endpoint_id),
            job_id=strawberry.ID(row.job_id) if row.job_id else None,
            created_at=row.created_at,
            event_type=view.event_type,
            status=DeliveryStatusValue(row.status),
            next_attempt_at=row.next_attempt_at if row.status == DeliveryStatusValue.PENDING else None,
            attempts=[
                WebhookAttempt(
                    at=attempt.at,
                    status_code=attempt.status_code,
                    duration_ms=attempt.duration_ms,
                    error=attempt.error,
                    response_body=attempt.response_body,
                    trigger=attempt.trigger,
                    request_headers=cast(JSON, attempt.request_headers),
                    response_headers=cast(JSON, attempt.response_headers),
                )
                for attempt in view.attempts
            ],
        )


@strawberry.type
class WebhookEndpoint:
    id: strawberry.ID
    url: str
    description: str | None
    event_types: list[str] = strawberry.field(description="Empty: every event type.")
    enabled: bool
    disabled_reason: str | None
    signing: SigningScheme  # type: ignore[valid-type]
    public_key: str | None = strawberry.field(description="whpk_... for V1A endpoints: verify with it.")
    created_at: datetime
    failing_since: datetime | None = strawberry.field(
        description="The first failure with no success since; null while healthy."
    )
    last_success_at: datetime | None
    last_error: str | None = strawberry.field(description="What the last failed attempt got.")
    rate_limit_per_second: float | None = strawberry.field(description="null: no limit of its own.")
    timeout_seconds: float = strawberry.field(description="Each attempt's deadline (its own or the default).")
    retry_schedule: list[float] = strawberry.field(
        description="Seconds before each attempt (its own or the default), each with jitter."
    )
    tenant_id: strawberry.Private[str]

    @classmethod
    def from_row(cls, row: EndpointRow) -> WebhookEndpoint:
        settings = get_settings()
        return cls(
            id=strawberry.ID(row.id),
            url=row.url,
            description=row.description,
            event_types=row.event_types,
            enabled=row.enabled,
            disabled_reason=row.disabled_reason,
            signing=SigningSchemeValue(row.signing),
            public_key=service.current_public_key(row),
            created_at=row.created_at,
            failing_since=row.failing_since,
            last_success_at=row.last_success_at,
            last_error=row.last_error,
            rate_limit_per_second=row.rate_limit_per_second,
            timeout_seconds=row.timeout_seconds or settings.webhook_timeout_seconds,
            retry_schedule=row.retry_schedule or list(settings.webhook_retry_schedule),
            tenant_id=row.tenant_id,
        )

    @strawberry.field(description="Recent deliveries, newest first, with their attempts.")
    def deliveries(
        self,
        info: GraphQLInfo,
        first: int | None = None,
        status: DeliveryStatus | None = None,  # type: ignore[valid-type]
    ) -> list[WebhookDelivery]:
        views = or_graphql_error(
            lambda: service.recent_deliveries(
                info.context.session,
                self.tenant_id,
                str(self.id),
                first=DEFAULT_DELIVERIES if first is None else first,
                status=DeliveryStatusValue(status) if status else None,
            )
        )
        return [WebhookDelivery.from_view(view) for view in views]


@strawberry.type
class WebhookEndpointPayload:
    endpoint: WebhookEndpoint | None
    secret: str | None = strawberry.field(
        description="whsec_..., shown once (V1 endpoints, create and rotate)."
    )
    user_errors: list[UserError]


@strawberry.type
class WebhookDeliveryPayload:
    delivery: WebhookDelivery | None
    user_errors: list[UserError]


@strawberry.type
class RecoverPayload:
    count: int
    user_errors: list[UserError]


@strawberry.type
class TriggerWebhookEventPayload:
    event_id: strawberry.ID | None = strawberry.field(
        description="evt_...; null when no endpoint wants the type and no listener streams."
    )
    endpoint_count: int = strawberry.field(description="Endpoints it is being delivered to.")
    user_errors: list[UserError]


@strawberry.input
class CreateWebhookEndpointInput:
    url: str
    event_types: list[str] | None = None
    description: str | None = None
    signing: SigningScheme | None = None  # type: ignore[valid-type]
    rate_limit_per_second: float | None = strawberry.field(
        default=None, description="At most this many deliveries a second to it (0.01 to 1000)."
    )
    timeout_seconds: float | None = strawberry.field(
        default=None, description="Each attempt's deadline, 1 to 60 s (default WEBHOOK_TIMEOUT_SECONDS)."
    )
    retry_schedule: list[float] | None = strawberry.field(
        default=None, description="Seconds before each attempt: at most 20, each at most 86400."
    )

    def policy(self) -> service.DeliveryPolicy:
        return service.DeliveryPolicy(self.rate_limit_per_second, self.timeout_seconds, self.retry_schedule)


@strawberry.input
class UpdateWebhookEndpointInput:
    url: str | None = None
    event_types: list[str] | None = None
    description: str | None = None
    enabled: bool | None = None
    rate_limit_per_second: float | None = strawberry.field(default=None, description="0: no limit.")
    timeout_seconds: float | None = strawberry.field(default=None, description="0: the default.")
    retry_schedule: list[float] | None = strawberry.field(default=None, description="[]: the default.")

    def policy(self) -> service.DeliveryPolicy:
        return service.DeliveryPolicy(self.rate_limit_per_second, self.timeout_seconds, self.retry_schedule)


@strawberry.type
class WebhookDeliveryConnection:
    nodes: list[WebhookDelivery]
    end_cursor: str | None = strawberry.field(description="Pass as `after` for the next page.")
    has_next_page: bool


@strawberry.type(description="An event type of the published catalog (also at GET /webhooks/event-types).")
class WebhookEventType:
    type: str
    description: str
    schema: JSON = strawberry.field(description="JSON Schema (2020-12) of the whole body.")
    example: JSON = strawberry.field(description="An example body.")


@strawberry.type
class WebhookQuery:
    @strawberry.field(description="Every webhook event type: what it means, its body's schema, an example.")
    def webhook_event_types(self) -> list[WebhookEventType]:
        return [
            WebhookEventType(
                type=entry["type"],
                description=entry["description"],
                schema=cast(JSON, entry["schema"]),
                example=cast(JSON, entry["example"]),
            )
            for entry in event_catalog()
        ]

    @strawberry.field(description="The caller's webhook endpoints.")
    def webhook_endpoints(self, info: GraphQLInfo) -> list[WebhookEndpoint]:
        principal = require(info, SCOPE)
        rows = service.list_endpoints(info.context.session, principal.tenant_id)
        return [WebhookEndpoint.from_row(row) for row in rows]

    @strawberry.field(
        description="The delivery log, newest first: filtered by endpoint, status, event type, job and"
        " creation time (since inclusive, until exclusive), paged by cursor."
    )
    def webhook_deliveries(
        self,
        info: GraphQLInfo,
        first: int = DEFAULT_DELIVERIES,
        after: str | None = None,
        endpoint_id: strawberry.ID | None = None,
        status: DeliveryStatus | None = None,  # type: ignore[valid-type]
        event_type: str | None = None,
        job_id: strawberry.ID | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> WebhookDeliveryConnection:
        principal = require(info, SCOPE)
        page = or_graphql_error(
            lambda: service.delivery_log(
                info.context.session,
                principal.tenant_id,
                first=first,
                before_id=after,
                endpoint_id=str(endpoint_id) if endpoint_id else None,
                status=DeliveryStatusValue(status) if status else None,
                event_type=event_type,
                job_id=str(job_id) if job_id else None,
                since=since,
                until=until,
            )
        )
        nodes = [WebhookDelivery.from_view(view) for view in page.deliveries]
        return WebhookDeliveryConnection(
            nodes=nodes,
            end_cursor=str(nodes[-1].id) if nodes and page.has_more else None,
            has_next_page=page.has_more,
        )

    @strawberry.field(description="One endpoint of the caller's, or null.")
    def webhook_endpoint(self, info: GraphQLInfo, id: strawberry.ID) -> WebhookEndpoint | None:
        principal = require(info, SCOPE)
        row = service.find_endpoint(info.context.session, principal.tenant_id, str(id))
        return WebhookEndpoint.from_row(row) if row else None


def _endpoint_payload(issued: service.IssuedEndpoint) -> WebhookEndpointPayload:
    return WebhookEndpointPayload(
        endpoint=WebhookEndpoint.from_row(issued.endpoint), secret=issued.secret, user_errors=[]
    )


def _endpoint_errors(errors: list[UserError]) -> WebhookEndpointPayload:
    return WebhookEndpointPayload(endpoint=None, secret=None, user_errors=errors)


def _delivery_errors(errors: list[UserError]) -> WebhookDeliveryPayload:
    return WebhookDeliveryPayload(delivery=None, user_errors=errors)


def _with_checked_url(
    info: GraphQLInfo,
    url: str | None,
    action: Callable[[service.CheckedURL | None], T],
    on_error: Callable[[list[UserError]], T],
) -> T:
    """Check (and resolve) a URL before the mutation uses the session, so no connection waits on DNS;
    a refused URL is a userError like the mutation's own."""
    try:
        checked = service.check_endpoint_url(url) if url is not None else None
    except ClaimcheckError as error:
        return on_error([UserError.from_error(error)])
    return run_mutation(info, lambda: action(checked), on_error)


@strawberry.type
class WebhookMutation:
    @strawberry.mutation(description="Add an endpoint; the whsec_ secret is in this answer only.")
    def create_webhook_endpoint(
        self, info: GraphQLInfo, input: CreateWebhookEndpointInput
    ) -> WebhookEndpointPayload:
        principal = require(info, SCOPE)
        signing = SigningSchemeValue(input.signing.value) if input.signing else SigningSchemeValue.V1

        def create(url: service.CheckedURL | None) -> WebhookEndpointPayload:
            assert url is not None
            issued = service.create_endpoint(
                info.context.session,
                principal,
                url=url,
                event_types=input.event_types,
                description=input.description,
                signing=signing,
                policy=input.policy(),
            )
            return _endpoint_payload(issued)

        return _with_checked_url(info, input.url, create, _endpoint_errors)

    @strawberry.mutation
    def update_webhook_endpoint(
        self, info: GraphQLInfo, id: strawberry.ID, input: UpdateWebhookEndpointInput
    ) -> WebhookEndpointPayload:
        principal = require(info, SCOPE)

        def update(url: service.CheckedURL | None) -> WebhookEndpointPayload:
            endpoint = service.update_endpoint(
                info.context.session,
                principal,
                str(id),
                url=url,
                event_types=input.event_types,
                description=input.description,
                enabled=input.enabled,
                policy=input.policy(),
            )
            return WebhookEndpointPayload(
                endpoint=WebhookEndpoint.from_row(endpoint), secret=None, user_errors=[]
            )

        return _with_checked_url(info, input.url, update, _endpoint_errors)

    @strawberry.mutation
    def delete_webhook_endpoint(self, info: GraphQLInfo, id: strawberry.ID) -> DeletePayload:
        principal = require(info, SCOPE)
        return run_mutation(
            info,
            lambda: DeletePayload(
                id=strawberry.ID(service.delete_endpoint(info.context.session, principal, str(id))),
                user_errors=[],
            ),
            lambda errors: DeletePayload(id=None, user_errors=errors),
        )

    @strawberry.mutation(description="A new signing key; the old one keeps signing beside it for a while.")
    def rotate_webhook_secret(
        self, info: GraphQLInfo, id: strawberry.ID, keep_old_for_seconds: int | None = None
    ) -> WebhookEndpointPayload:
        principal = require(info, SCOPE)
        return run_mutation(
            info,
            lambda: _endpoint_payload(
                service.rotate_key(info.context.session, principal, str(id), keep_old_for_seconds)
            ),
            _endpoint_errors,
        )

    @strawberry.mutation(description="Send a webhook.test event to this endpoint.")
    def send_test_webhook(self, info: GraphQLInfo, endpoint_id: strawberry.ID) -> WebhookDeliveryPayload:
        principal = require(info, SCOPE)
        return run_mutation(
            info,
            lambda: WebhookDeliveryPayload(
                delivery=WebhookDelivery.from_view(
                    service.send_test(info.context.session, principal, str(endpoint_id))
                ),
                user_errors=[],
            ),
            _delivery_errors,
        )

    @strawberry.mutation(
        description="Send the catalog's example of an event type to the endpoints that want it and to"
        " running listeners (webhookEvents), as an event of the caller's."
    )
    def trigger_webhook_event(self, info: GraphQLInfo, event_type: str) -> TriggerWebhookEventPayload:
        principal = require(info, SCOPE)

        def trigger() -> TriggerWebhookEventPayload:
            sent = service.trigger_sample(info.context.session, principal, event_type)
            event_id = strawberry.ID(sent.event_id) if sent.event_id else None
            return TriggerWebhookEventPayload(
                event_id=event_id, endpoint_count=sent.endpoints, user_errors=[]
            )

        return run_mutation(
            info,
            trigger,
            lambda errors: TriggerWebhookEventPayload(event_id=None, endpoint_count=0, user_errors=errors),
        )

    @strawberry.mutation(
        description="Send an event to an endpoint again now, with the same webhook-id (job events: the key"
        " needs jobs:read as well)."
    )
    def redeliver_webhook(
        self, info: GraphQLInfo, event_id: strawberry.ID, endpoint_id: strawberry.ID
    ) -> WebhookDeliveryPayload:
        principal = require(info, SCOPE)
        return run_mutation(
            info,
            lambda: WebhookDeliveryPayload(
                delivery=WebhookDelivery.from_view(
                    service.redeliver(info.context.session, principal, str(event_id), str(endpoint_id))
                ),
                user_errors=[],
            ),
            _delivery_errors,
        )

    @strawberry.mutation(
        description="Send again every delivery to this endpoint that failed since a time (job events: the"
        " key needs jobs:read as well)."
    )
    def recover_webhooks(
        self, info: GraphQLInfo, endpoint_id: strawberry.ID, since: datetime
    ) -> RecoverPayload:
        principal = require(info, SCOPE)
        return run_mutation(
            info,
            lambda: RecoverPayload(
                count=service.recover(info.context.session, principal, str(endpoint_id), since),
                user_errors=[],
            ),
            lambda errors: RecoverPayload(count=0, user_errors=errors),
        )


@strawberry.type(description="A webhook event as its deliveries carry it.")
class WebhookEvent:
    id: strawberry.ID = strawberry.field(description="evt_...: the webhook-id header of its deliveries.")
    type: str
    timestamp: datetime = strawberry.field(description="When it happened (the body's timestamp).")
    body: str = strawberry.field(description="The exact JSON body its webhooks carry: sign these bytes.")


@strawberry.type
class WebhookSubscription:
    @strawberry.subscription(
        description="The tenant's webhook events from now on (webhooks:manage; job events need jobs:read as"
        " well), or from `after` an event id: resuming may repeat a few events seen shortly before it"
        " (drop ids already seen) and misses none. Events are recorded while a listener streams, and"
        " for a while after it drops, even when no endpoint wants them."
    )
    async def webhook_events(
        self, info: GraphQLInfo, event_types: list[str] | None = None, after: strawberry.ID | None = None
    ) -> AsyncGenerator[WebhookEvent, None]:
        principal = require(info, SCOPE)
        connection = info.context.connection
        if connection.subscriptions >= get_settings().max_subscriptions_per_connection:
            raise graphql_error(QuotaExceededError("too many subscriptions on this connection"))
        connection.subscriptions += 1
        try:
            async for event in streaming.stream(principal, event_types, str(after) if after else None):
                yield WebhookEvent(
                    id=strawberry.ID(event.id), type=event.type, timestamp=event.timestamp, body=event.body
                )
        except ClaimcheckError as error:
            raise graphql_error(error) from error
        finally:
            connection.subscriptions -= 1
