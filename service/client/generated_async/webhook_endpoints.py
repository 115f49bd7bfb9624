from typing import Optional

from pydantic import Field

from .base_model import BaseModel


class WebhookEndpoints(BaseModel):
    webhook_endpoints: list["WebhookEndpointsWebhookEndpoints"] = Field(
        alias="webhookEndpoints"
    )


class WebhookEndpointsWebhookEndpoints(BaseModel):
    id: str
    url: str
    description: Optional[str]
    event_types: list[str] = Field(alias="eventTypes")
    enabled: bool


WebhookEndpoints.model_rebuild()
