from datetime import datetime
from typing import Optional

from pydantic import Field

from .base_model import BaseModel
from .enums import JobStatus


class JobFields(BaseModel):
    id: str
    kind: str
    status: JobStatus
    progress: float
    message: Optional[str]
    attempt: int
    created_at: datetime = Field(alias="createdAt")
    started_at: Optional[datetime] = Field(alias="startedAt")
    finished_at: Optional[datetime] = Field(alias="finishedAt")
    estimated_completion_at: Optional[datetime] = Field(alias="estimatedCompletionAt")
    idempotency_key: Optional[str] = Field(alias="idempotencyKey")
    error: Optional["JobFieldsError"]
    artifact: Optional["JobFieldsArtifact"]


class JobFieldsError(BaseModel):
    code: str
    message: str
    retryable: bool


class JobFieldsArtifact(BaseModel):
    filename: str
    content_type: str = Field(alias="contentType")
    byte_size: int = Field(alias="byteSize")
    sha_256: str = Field(alias="sha256")


JobFields.model_rebuild()
