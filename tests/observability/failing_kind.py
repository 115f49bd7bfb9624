"""A kind whose every run fails (not retryable): the failed jobs of the Prometheus test's load."""

from __future__ import annotations

from pydantic import BaseModel

from service.jobs.kinds import ArtifactOutput, JobContext, JobFailure, Kind, register

FAILING_KIND = "test-fail"


class NoInput(BaseModel):
    pass


def fail(ctx: JobContext, params: NoInput) -> ArtifactOutput:
    raise JobFailure("BROKEN_ON_PURPOSE", "this kind always fails")


register(Kind(name=FAILING_KIND, input_model=NoInput, handler=fail, content_type="text/plain"))
