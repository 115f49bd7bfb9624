"""Kinds the test worker loads through KIND_MODULES: slow, steady work to watch, cancel and kill; and a
kind that names its file whatever the test asks (hostile names)."""

from __future__ import annotations

import ctypes
import signal
import time
from collections.abc import Iterator

from pydantic import BaseModel, Field

from service.jobs.kinds import ArtifactOutput, JobContext, Kind, register


class SlowInput(BaseModel):
    seconds: float = Field(default=2.0, gt=0, le=60)
    steps: int = Field(default=10, ge=1, le=1000)


def slow(ctx: JobContext, params: SlowInput) -> ArtifactOutput:
    """Sleeps in steps, reporting progress after each; the artifact lists the steps."""
    ctx.progress(0.0, "starting")
    for step in range(params.steps):
        time.sleep(params.seconds / params.steps)
        # the time of the report rides along, so watchers can measure how late they hear of it
        ctx.progress((step + 1) / params.steps, f"step {step + 1} of {params.steps} at {time.time():.3f}")

    def chunks() -> Iterator[bytes]:
        yield f"{params.steps} steps in {params.seconds} s\n".encode()

    return ArtifactOutput(filename="slow.txt", content_type="text/plain", chunks=chunks())


register(
    Kind(name="test-slow", input_model=SlowInput, handler=slow, content_type="text/plain", max_attempts=3)
)

register(
    Kind(
        name="test-overrun",
        input_model=SlowInput,
        handler=slow,
        content_type="text/plain",
        timeout_seconds=1,  # the horse's SIGALRM interrupts it at 1 s
        max_attempts=1,
    )
)


class DoomedInput(BaseModel):
    """Kinds that take their work horse down: the supervisor must contain the damage."""

    note: str = "doomed"


def crash(ctx: JobContext, params: DoomedInput) -> None:
    """Dies of a segfault, as a buggy C library would."""
    ctx.progress(0.1, "about to crash")
    ctypes.string_at(0)


def hang(ctx: JobContext, params: DoomedInput) -> None:
    """Never returns, deaf to RQ's SIGALRM, as code stuck inside a C call would be."""
    ctx.progress(0.1, "about to hang")
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    while True:
        time.sleep(60)


register(
    Kind(name="test-segfault", input_model=DoomedInput, handler=crash, content_type="x/y", max_attempts=2)
)
register(
    Kind(
        name="test-deaf-hang",
        input_model=DoomedInput,
        handler=hang,
        content_type="x/y",
        timeout_seconds=1,
        max_attempts=1,
    )
)


class NamedInput(BaseModel):
    filename: str
    content: str = "named by the caller\n"


def named(ctx: JobContext, params: NamedInput) -> ArtifactOutput:
    """Returns the filename it was given, unchecked, as a careless or hostile plugin might."""
    return ArtifactOutput(
        filename=params.filename, content_type="text/plain", chunks=[params.content.encode()]
    )


register(Kind(name="test-named", input_model=NamedInput, handler=named, content_type="text/plain"))
