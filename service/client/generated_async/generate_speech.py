from typing import Any, Optional

from pydantic import Field

from .base_model import BaseModel
from .fragments import JobFields


class GenerateSpeech(BaseModel):
    generate_speech: "GenerateSpeechGenerateSpeech" = Field(alias="generateSpeech")


class GenerateSpeechGenerateSpeech(BaseModel):
    job: Optional["GenerateSpeechGenerateSpeechJob"]
    user_errors: list["GenerateSpeechGenerateSpeechUserErrors"] = Field(
        alias="userErrors"
    )


GenerateSpeechGenerateSpeechJob = JobFields


class GenerateSpeechGenerateSpeechUserErrors(BaseModel):
    code: str
    field: Optional[list[str]]
    message: str
    extensions: Optional[Any]


GenerateSpeech.model_rebuild()
GenerateSpeechGenerateSpeech.model_rebuild()
