from typing import Any, Optional

from pydantic import Field

from .base_model import BaseModel


class DeleteJob(BaseModel):
    delete_job: "DeleteJobDeleteJob" = Field(alias="deleteJob")


class DeleteJobDeleteJob(BaseModel):
    id: Optional[str]
    user_errors: list["DeleteJobDeleteJobUserErrors"] = Field(alias="userErrors")


class DeleteJobDeleteJobUserErrors(BaseModel):
    code: str
    field: Optional[list[str]]
    message: str
    extensions: Optional[Any]


DeleteJob.model_rebuild()
DeleteJobDeleteJob.model_rebuild()
