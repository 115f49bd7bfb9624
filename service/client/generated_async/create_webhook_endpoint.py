from typing import Any, Optional

from pydantic import Field

from .base_model import BaseModel


class CreateWebhookEndpoint(BaseModel):
    create_webhook_endpoint: "CreateWebhookEndpointCreateWebhookEndpoint" = Field(
        alias="createWebhookEndpoint"
    )


class CreateWebhookEndpointCreateWebhookEndpoint(BaseModel):
    endpoint: Optional["CreateWebhookEndpointCreateWebhookEndpointEndpoint"]
    secret: Optional[str]
    user_errors: list["CreateWebhookEndpointCreateWebhookEndpointUserErrors"] = Field(
        alias="userErrors"
    )


class CreateWebhookEndpointCreateWebhookEndpointEndpoint(BaseModel):
    id: str
    url: str
    event_types: list[str] = Field(alias="eventTypes")
    enabled: bool


class CreateWebhookEndpointCreateWebhookEndpointUserErrors(BaseModel):
    code: str
    field: Optional[list[str]]
    message: str
    extensions: Optional[Any]


CreateWebhookEndpoint.model_rebuild()
CreateWebhookEndpointCreateWebhookEndpoint.model_rebuild()
