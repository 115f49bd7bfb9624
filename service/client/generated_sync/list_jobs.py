from typing import Optional

from pydantic import Field

from .base_model import BaseModel
from .fragments import JobFields


class ListJobs(BaseModel):
    jobs: "ListJobsJobs"


class ListJobsJobs(BaseModel):
    nodes: list["ListJobsJobsNodes"]
    page_info: "ListJobsJobsPageInfo" = Field(alias="pageInfo")


ListJobsJobsNodes = JobFields


class ListJobsJobsPageInfo(BaseModel):
    has_next_page: bool = Field(alias="hasNextPage")
    end_cursor: Optional[str] = Field(alias="endCursor")


ListJobs.model_rebuild()
ListJobsJobs.model_rebuild()
