"""How tenant commands speak: exit codes, errors, jobs as lines or JSON, and live progress (a rich
progress bar on a terminal, one plain line per change otherwise)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn

from service.client.errors import (
    AuthenticationError,
    ClaimcheckError,
    ForbiddenError,
    RateLimitedError,
    ValidationError,
)
from service.client.generated_async.fragments import JobFields

OK = 0
FAILED = 1
USAGE = 2
AUTH = 3
INTERRUPTED = 130


def exit_code(error: ClaimcheckError) -> int:
    if isinstance(error, AuthenticationError | ForbiddenError):
        return AUTH
    if isinstance(error, ValidationError):
        return USAGE
    return FAILED


def report_error(error: ClaimcheckError, *, as_json: bool) -> int:
    """Say what went wrong on stderr (and as JSON on stdout with --json); the exit code for it."""
    hint = f" (retry after {error.retry_after:g} s)" if isinstance(error, RateLimitedError) else ""
    print(f"error ({error.code}): {error.message}{hint}", file=sys.stderr)
    if as_json:
        body: dict[str, Any] = {"code": error.code, "message": error.message, "field": error.field}
        if isinstance(error, RateLimitedError):
            body["retryAfter"] = error.retry_after
        print(json.dumps({"error": body}))
    return exit_code(error)


def to_json(model: BaseModel) -> str:
    return json.dumps(model.model_dump(mode="json", by_alias=True, exclude={"typename__"}))


def job_line(job: JobFields) -> str:
    """One line about a job: time, id, status, progress, message."""
    now = datetime.now(UTC).strftime("%H:%M:%S")
    message = f"  {job.message}" if job.message else ""
    error = f"  {job.error.code}: {job.error.message}" if job.error else ""
    return f"{now}  {job.id}  {job.status.value:<9} {job.progress:4.0%}{message}{error}"


def job_outcome(job: JobFields) -> int:
    return OK if job.status.value == "SUCCEEDED" else FAILED


class JobProgress:
    """Shows each state of a followed job: a progress bar when stdout is a terminal, else a line per
    change (nothing on stdout with --json: its document comes at the end)."""

    def __init__(self, *, as_json: bool) -> None:
        self.terminal = sys.stdout.isatty()
        self.as_json = as_json
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> JobProgress:
        if self.terminal:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                console=Console(stderr=self.as_json),
            )
            self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, job: JobFields) -> None:
        if self._progress is not None:
            description = job.message or job.kind
            if self._task is None:
                self._task = self._progress.add_task(description, total=1.0, status=job.status.value)
            self._progress.update(
                self._task, completed=job.progress, description=description, status=job.status.value
            )
        elif not self.as_json:
            print(job_line(job), flush=True)

    def bytes_callback(self) -> Callable[[int, int], None]:
        """A download's progress: a bar on a terminal, nothing otherwise."""
        progress = self._progress
        if progress is None:
            return lambda _done, _total: None
        task = progress.add_task("downloading", total=None, status="")

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        return update
