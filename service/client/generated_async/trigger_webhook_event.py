from typing import Any, Optional

from pydantic import Field

from .base_model import BaseModel


class TriggerWebhookEvent(BaseModel):
    trigger_webhook_event: "TriggerWebhookEventTriggerWebhookEvent" = Field(
        alias="triggerWebhookEvent"
    )


class TriggerWebhookEventTriggerWebhookEvent(BaseModel):
    event_id: Optional[str] = Field(alias="eventId")
    endpoint_count: int = Field(alias="endpointCount")
    user_errors: list["TriggerWebhookEventTriggerWebhookEventUserErrors"] = Field(
        alias="userErrors"
    )


class TriggerWebhookEventTriggerWebhookEventUserErrors(BaseModel):
    code: str
    field: Optional[list[str]]
    message: str
    extensions: Optional[Any]


TriggerWebhookEvent.model_rebuild()
TriggerWebhookEventTriggerWebhookEvent.model_rebuild()
