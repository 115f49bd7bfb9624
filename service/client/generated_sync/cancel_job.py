from typing import Any, Optional

from pydantic import Field

from .base_model import BaseModel
from .fragments import JobFields


class CancelJob(BaseModel):
    cancel_job: "CancelJobCancelJob" = Field(alias="cancelJob")


class CancelJobCancelJob(BaseModel):
    job: Optional["CancelJobCancelJobJob"]
    user_errors: list["CancelJobCancelJobUserErrors"] = Field(alias="userErrors")


CancelJobCancelJobJob = JobFields


class CancelJobCancelJobUserErrors(BaseModel):
    code: str
    field: Optional[list[str]]
    message: str
    extensions: Optional[Any]


CancelJob.model_rebuild()
CancelJobCancelJob.model_rebuild()
