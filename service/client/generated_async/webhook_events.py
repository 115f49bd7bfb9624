from datetime import datetime

from pydantic import Field

from .base_model import BaseModel


class WebhookEvents(BaseModel):
    webhook_events: "WebhookEventsWebhookEvents" = Field(alias="webhookEvents")


class WebhookEventsWebhookEvents(BaseModel):
    id: str
    type_: str = Field(alias="type")
    timestamp: datetime
    body: str


WebhookEvents.model_rebuild()
