"""The worker's supervisor: it forks work horses (service/jobs/horse.py) and keeps them running.

Each horse runs jobs one after another and reports over a pipe when one starts (with its time limit)
and how it ended. The supervisor records the outcomes' metrics (what a horse records would be
another process's), and guards the jobs against their horse:

- a horse that dies mid-job (a segfault in a kind's library, the OOM killer, os._exit) has that job
  failed or retried at once, with code CRASHED, and a fresh horse takes its place;
- a horse still running a job JOB_KILL_GRACE_SECONDS past the job's limit (a handler stuck where
  RQ's SIGALRM cannot reach it) is killed, and that job failed or retried with code TIMEOUT;
- SIGTERM lets every horse finish its current job, then the supervisor exits.

Horses die with the supervisor (PR_SET_PDEATHSIG): a killed worker leaves no orphan running jobs;
the scheduler recovers what they were running once its heartbeat stops.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import select
import signal
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from redis.exceptions import RedisError
from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob

from observability.forks import GATE
from observability.metrics import record_job_finished, record_queue_wait
from service.db import session_scope
from service.jobs.horse import run_horse
from service.jobs.models import TERMINAL_STATUSES, JobStatus
from service.jobs.recovery import CRASHED, TIMEOUT, recover_dead_run
from service.outages import log_failure
from service.redis import get_redis

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
RESPAWN_BACKOFF_SECONDS = 1.0
FORK_WAIT_SECONDS = 1.0
"""How long a fork waits for the process's other threads to let go of the fork gate."""
PR_SET_PDEATHSIG = 1


@dataclass
class Horse:
    """A running horse as the supervisor sees it."""

    pid: int
    reader: int
    born: float = field(default_factory=time.monotonic)
    buffer: bytes = b""
    job: str | None = None
    deadline: float | None = None
    killed_for_overrun: bool = False


class Supervisor:
    """Forks `concurrency` horses on these queues and supervises them until stopped (or, in a burst,
    until every horse found its queues empty)."""

    def __init__(
        self,
        queues: list[str],
        *,
        concurrency: int,
        burst: bool,
        max_jobs_per_horse: int | None,
        kill_grace_seconds: float,
    ) -> None:
        self.queues = queues
        self.concurrency = concurrency
        self.burst = burst
        self.max_jobs_per_horse = max_jobs_per_horse
        self.kill_grace_seconds = kill_grace_seconds
        self.horses: dict[int, Horse] = {}
        self.stopping = False
        self._next_spawn = 0.0

    def run(self) -> None:
        """Supervise until every horse has exited for good."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._request_stop)
        while len(self.horses) < self.concurrency and not self.stopping:
            self._spawn()
        while self.horses or not (self.stopping or self.burst):
            self._read(POLL_SECONDS)
            self._reap()
            self._kill_overruns()
            self._replace_missing()
        log.info("worker stopped")

    def _request_stop(self, signum: int, _frame: FrameType | None) -> None:
        """Warm stop: each horse finishes its job; a second signal asks RQ for a cold stop."""
        log.info("worker stopping (signal %d): horses finish their current job", signum)
        self.stopping = True
        for pid in list(self.horses):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    # --- horses --------------------------------------------------------------------------------------

    def _spawn(self) -> None:
        """Fork a horse, through the fork gate: this process's other threads (the deliverer, the
        metrics scrape, the span exporter) are out of any C library's lock while it forks."""
        reader, writer = os.pipe()
        pid = GATE.fork(FORK_WAIT_SECONDS)
        if pid is None:
            os.close(reader)
            os.close(writer)
            log.warning("no work horse forked: a thread held the fork gate for %.0f s", FORK_WAIT_SECONDS)
            self._next_spawn = time.monotonic() + RESPAWN_BACKOFF_SECONDS
            return
        if pid == 0:  # the horse
            os.close(reader)
            for horse in self.horses.values():
                os.close(horse.reader)
            _die_with_parent()
            run_horse(writer, self.queues, burst=self.burst, max_jobs=self.max_jobs_per_horse)
        os.close(writer)
        os.set_blocking(reader, False)
        self.horses[pid] = Horse(pid=pid, reader=reader)
        log.info("work horse %d started", pid)

    def _replace_missing(self) -> None:
        if self.stopping or self.burst or len(self.horses) >= self.concurrency:
            return
        if time.monotonic() < self._next_spawn:
            return
        self._spawn()

    def _reap(self) -> None:
        while self.horses:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            horse = self.horses.pop(pid, None)
            if horse is None:
                continue
            self._drain(horse)
            os.close(horse.reader)
            if horse.job is not None:
                self._recover(horse, status)
            elif os.waitstatus_to_exitcode(status) != 0:
                log.warning("work horse %d exited with %s between jobs", pid, _describe(status))
            if time.monotonic() - horse.born < RESPAWN_BACKOFF_SECONDS:
                self._next_spawn = time.monotonic() + RESPAWN_BACKOFF_SECONDS  # no fork loop

    def _kill_overruns(self) -> None:
        now = time.monotonic()
        for horse in self.horses.values():
            if horse.deadline is not None and now > horse.deadline and not horse.killed_for_overrun:
                log.warning(
                    "job %s ran past its limit in work horse %d; killing the horse", horse.job, horse.pid
                )
                horse.killed_for_overrun = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(horse.pid, signal.SIGKILL)

    # --- what horses say -----------------------------------------------------------------------------

    def _read(self, timeout: float) -> None:
        readers = {horse.reader: horse for horse in self.horses.values()}
        try:
            ready, _, _ = select.select(list(readers), [], [], timeout)
        except InterruptedError:
            return
        for fd in ready:
            self._drain(readers[fd])

    def _drain(self, horse: Horse) -> None:
        while True:
            try:
                chunk = os.read(horse.reader, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            horse.buffer += chunk
        *lines, horse.buffer = horse.buffer.split(b"\n")
        for line in lines:
            if line:
                self._handle(horse, json.loads(line))

    def _handle(self, horse: Horse, message: dict[str, Any]) -> None:
        event = message["event"]
        if event == "start":
            horse.job = message["job"]
            limit = message.get("timeout")
            horse.deadline = (
                time.monotonic() + float(limit) + self.kill_grace_seconds if limit and limit > 0 else None
            )
        elif event == "idle":
            horse.job, horse.deadline = None, None
        elif event == "finished":
            record_queue_wait(message["kind"], message["queue_wait_seconds"])
            if message["status"] in TERMINAL_STATUSES and message["run_seconds"] is not None:
                record_job_finished(message["kind"], message["status"], message["run_seconds"])

    # --- a job whose horse died ----------------------------------------------------------------------

    def _recover(self, horse: Horse, status: int) -> None:
        assert horse.job is not None
        if horse.killed_for_overrun:
            code, message = TIMEOUT, "the job ran past its time limit and was stopped"
        else:
            code, message = CRASHED, f"the process running this job died ({_describe(status)})"
        log.warning("work horse %d died running job %s: %s", horse.pid, horse.job, _describe(status))
        try:
            with session_scope() as session:
                job = recover_dead_run(session, horse.job, code=code, message=message)
                ended = (job.kind, job.status) if job is not None else None
            if ended is not None and JobStatus(ended[1]) in TERMINAL_STATUSES:
                record_job_finished(ended[0], ended[1])
        except Exception:
            # The job keeps its RUNNING row; the scheduler recovers it when its heartbeat goes stale.
            log_failure(log, "could not recover job %s after its work horse died", horse.job)
        _forget_in_rq(horse.job)


def _forget_in_rq(job_id: str) -> None:
    """Drop the dead run's RQ job (its registries included): if the job goes round again, the outbox
    sweep enqueues it afresh instead of waiting for RQ's record of the dead run to look abandoned."""
    try:
        RQJob.fetch(job_id, connection=get_redis()).delete()
    except NoSuchJobError:
        pass
    except RedisError as error:
        log.warning("could not remove job %s from RQ: %s", job_id, error)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (elsewhere: nothing)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
