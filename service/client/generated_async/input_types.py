from datetime import datetime
from typing import Optional

from pydantic import Field

from .base_model import BaseModel
from .enums import AudioFormat, ExportFormat, JobPriority, SigningScheme


class CreateWebhookEndpointInput(BaseModel):
    url: str
    event_types: Optional[list[str]] = Field(alias="eventTypes", default=None)
    description: Optional[str] = None
    signing: Optional[SigningScheme] = None


class GenerateSpeechInput(BaseModel):
    text: str
    voice: Optional[str] = None
    format: Optional[AudioFormat] = None
    idempotency_key: Optional[str] = Field(alias="idempotencyKey", default=None)
    priority: JobPriority = JobPriority.NORMAL
    deadline: Optional[datetime] = None


class StartExportInput(BaseModel):
    format: Optional[ExportFormat] = None
    since: Optional[datetime] = None
    idempotency_key: Optional[str] = Field(alias="idempotencyKey", default=None)
    priority: JobPriority = JobPriority.NORMAL
    deadline: Optional[datetime] = None


class UpdateWebhookEndpointInput(BaseModel):
    url: Optional[str] = None
    event_types: Optional[list[str]] = Field(alias="eventTypes", default=None)
    description: Optional[str] = None
    enabled: Optional[bool] = None
