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
    rate_limit_per_second: Optional[float] = Field(
        alias="rateLimitPerSecond", default=None
    )
    "At most this many deliveries a second to it (0.01 to 1000)."
    timeout_seconds: Optional[float] = Field(alias="timeoutSeconds", default=None)
    "Each attempt's deadline, 1 to 60 s (default WEBHOOK_TIMEOUT_SECONDS)."
    retry_schedule: Optional[list[float]] = Field(alias="retrySchedule", default=None)
    "Seconds before each attempt: at most 20, each at most 86400."


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
    rate_limit_per_second: Optional[float] = Field(
        alias="rateLimitPerSecond", default=None
    )
    "0: no limit."
    timeout_seconds: Optional[float] = Field(alias="timeoutSeconds", default=None)
    "0: the default."
    retry_schedule: Optional[list[float]] = Field(alias="retrySchedule", default=None)
    "[]: the default."
