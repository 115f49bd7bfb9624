from typing import Optional

from pydantic import Field

from .base_model import BaseModel
from .enums import JobStatus


class GetDownload(BaseModel):
    job: Optional["GetDownloadJob"]


class GetDownloadJob(BaseModel):
    id: str
    status: JobStatus
    artifact: Optional["GetDownloadJobArtifact"]


class GetDownloadJobArtifact(BaseModel):
    filename: str
    content_type: str = Field(alias="contentType")
    byte_size: int = Field(alias="byteSize")
    sha_256: str = Field(alias="sha256")
    download_url: str = Field(alias="downloadUrl")


GetDownload.model_rebuild()
GetDownloadJob.model_rebuild()
