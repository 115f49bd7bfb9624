"""A work horse: a long-lived child of the worker process that runs jobs one after another, in process.

The worker process (service/jobs/supervisor.py) forks it once everything a job needs is loaded, and
watches it. A job costs no fork and no cold start: the database pool, the Redis connection, the
span exporter and the kinds' libraries stay warm from one job to the next. Over a pipe, the horse
tells the supervisor when a job starts (with its time limit) and how it ended; if the horse dies or
hangs mid-job, the supervisor fails or retries that job alone and forks a fresh horse.

Inside, RQ's SimpleWorker takes jobs off the queues in strict priority order (service/jobs/priority.py),
but every JOB_PRIORITY_STARVATION_EVERY-th take looks lowest first; a job past its kind's time limit is
interrupted by RQ's SIGALRM death penalty, and one that ignores it is killed by the supervisor.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from dataclasses import asdict
from types import FrameType
from typing import Any

from redis.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue, SimpleWorker
from rq.executions import Execution
from rq.job import Job as RQJob
from rq.job import JobStatus as RQStatus
from rq.registry import StartedJobRegistry
from rq.results import Result
from rq.utils import now
from rq.worker.base import WorkerStatus

from observability.tracing import flush
from service.jobs.runner import RunResult
from service.outages import describe
from service.redis import get_queue, get_redis
from service.settings import get_settings

log = logging.getLogger(__name__)

REDIS_RETRY_SECONDS = 1.0
HEARTBEAT_EVERY_SECONDS = 5.0
SUSPENSION_CHECK_EVERY_SECONDS = 1.0

_channel: int | None = None
"""The write end of the pipe to the supervisor (set in the horse process only)."""
_ended: RunResult | None = None
"""How the current job's run ended, told to the supervisor with the job's end (one message)."""


def send(event: str, **fields: Any) -> None:
    """One line to the supervisor; nothing when this process is not a horse (a test running jobs)."""
    if _channel is not None:
        os.write(_channel, (json.dumps({"event": event, **fields}) + "\n").encode())


def report_run(result: RunResult | None) -> None:
    """How a job run ended, for the supervisor's metrics: sent with the job's end (`idle`)."""
    global _ended
    _ended = result


class HorseWorker(SimpleWorker):
    """RQ's in-process worker, telling the supervisor when each job starts and ends."""

    stop_requested = False
    _last_beat = 0.0
    _last_suspension_check = float("-inf")
    starvation_every = 0
    """Every this many takes, one looks at the queues lowest priority first (0: strict order always)."""
    _taken = 0

    def reorder_queues(self, reference_queue: Queue) -> None:  # noqa: ARG002 - the order is not by queue
        """The order of the next take: highest priority first, but lowest first on every
        starvation_every-th take, so a steady stream of HIGH jobs cannot hold LOW ones back forever."""
        self._taken += 1
        every = self.starvation_every
        lowest_first = every > 1 and self._taken % every == every - 1
        self._ordered_queues = self.queues[::-1] if lowest_first else self.queues[:]

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        """RQ's worker heartbeat (three commands, several times per job) at most every
        HEARTBEAT_EVERY_SECONDS and in one round trip; the key lives worker_ttl + 60 s anyway."""
        if pipeline is not None:
            super().heartbeat(timeout, pipeline)
            return
        if timeout is None and time.monotonic() - self._last_beat < HEARTBEAT_EVERY_SECONDS:
            return
        with self.connection.pipeline() as beat:
            super().heartbeat(timeout, beat)
            beat.execute()
        self._last_beat = time.monotonic()

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        """RQ writes the worker's state several times per job, mostly the state it already has (IDLE
        after each job and again before each take): only a change is written."""
        if state == self.get_state():
            return
        super().set_state(state, pipeline)

    def check_for_suspension(self, burst: bool) -> None:
        """`rq suspend` is looked for before each take (a round trip): at most once a second here."""
        if time.monotonic() - self._last_suspension_check < SUSPENSION_CHECK_EVERY_SECONDS:
            return
        super().check_for_suspension(burst)
        self._last_suspension_check = time.monotonic()

    _preparing: Pipeline | None = None
    """The first half of a job's bookkeeping (prepare_execution), sent with the second."""

    def prepare_execution(self, job: RQJob) -> Execution:
        """RQ records the job's execution and the worker's BUSY state in a round trip of their own,
        then the heartbeats and the job's STARTED in another (prepare_job_execution): here the first
        half is queued and goes with the second, so a job's start costs Redis one round trip."""
        pipeline = self.connection.pipeline()
        execution = Execution.create(
            job, self.get_heartbeat_ttl(job), pipeline=pipeline, worker_name=self.name
        )
        self.executions[execution.id] = execution
        self.set_state(WorkerStatus.BUSY, pipeline=pipeline)
        self._preparing = pipeline
        return execution

    def prepare_job_execution(self, job: RQJob, remove_from_intermediate_queue: bool = False) -> None:
        """RQ's own bookkeeping before the job runs, sent with what prepare_execution queued: the body
        repeats RQ 3.0's prepare_job_execution, on that pipeline instead of a new one."""
        pipeline, self._preparing = self._preparing, None
        if pipeline is None:
            super().prepare_job_execution(job, remove_from_intermediate_queue)
            return
        with pipeline:
            heartbeat_ttl = self.get_heartbeat_ttl(job)
            self.heartbeat(heartbeat_ttl, pipeline=pipeline)
            job.heartbeat(now(), heartbeat_ttl, pipeline=pipeline)
            job.prepare_for_execution(self.name, pipeline=pipeline)
            pipeline.persist(job.key)
            if remove_from_intermediate_queue:
                pipeline.lrem(Queue(job.origin, connection=self.connection).intermediate_queue_key, 1, job.id)
            pipeline.execute()

    def handle_execution_ended(self, job: RQJob, queue: Queue, heartbeat_ttl: int) -> None:  # noqa: ARG002
        """RQ refreshes the job's heartbeat here for its callbacks; Claimcheck's jobs have none, and
        their record is deleted right after (result_ttl=0), in the same round trip as the outcome."""
        job.ended_at = now()

    def handle_job_success(
        self, job: RQJob, queue: Queue, started_job_registry: StartedJobRegistry, execution: Execution
    ) -> None:
        """RQ's success bookkeeping in one round trip, where RQ takes eight: Claimcheck's jobs have
        no RQ dependents, repeats, groups, rate limits or kept results (their outcome lives in
        Postgres), so RQ's WATCH, its dependents read and the reads that find the job's registries
        and executions are skipped: the job's record and this execution are deleted, and the worker
        goes IDLE in the same round trip. (An execution of an earlier run, whose horse died, is
        forgotten by the supervisor or RQ's registry cleanup.) Any other job takes RQ's own path."""
        if (
            job.repeats_left
            or job.has_rate_limit
            or job.group_id
            or job.get_result_ttl(self.default_result_ttl) != 0
        ):
            super().handle_job_success(job, queue, started_job_registry, execution)
            return
        with self.connection.pipeline() as pipeline:
            self.increment_successful_job_count(pipeline=pipeline)
            if job.started_at is not None and job.ended_at is not None:
                self.increment_total_working_time(job.ended_at - job.started_at, pipeline)
            self.cleanup_execution(job, pipeline=pipeline, execution=execution)
            pipeline.delete(
                job.key,
                job.dependents_key,
                job.dependencies_key,
                Result.get_key(job.id),  # type: ignore[no-untyped-call]
                job.execution_registry.key,
            )
            job._status = RQStatus.FINISHED  # as RQ's own success path sets it
            self.set_state(WorkerStatus.IDLE, pipeline)  # RQ writes it after the job, alone
            pipeline.execute()

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_requested = True  # RQ also quits on a lost Redis: this tells the two apart
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def execute_job(self, job: RQJob, queue: Queue) -> None:
        global _ended
        _ended = None
        send("start", job=job.id, timeout=job.timeout)
        try:
            super().execute_job(job, queue)
        finally:
            ended, _ended = _ended, None
            send("idle", job=job.id, **({"finished": asdict(ended)} if ended is not None else {}))


def run_horse(channel: int, queue_names: list[str], *, burst: bool, max_jobs: int | None) -> None:
    """The horse's life: work the queues until SIGTERM, the end of a burst, or max_jobs jobs; when RQ
    quits because Redis went away, start it again once Redis answers. Never returns: the process exits."""
    global _channel
    _channel = channel
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)  # the supervisor's handlers are not the horse's
    code = 0
    try:
        queues = [get_queue(name) for name in queue_names]
        done = 0
        while True:
            worker: HorseWorker | None = None
            try:
                worker = HorseWorker(queues, connection=get_redis())
                worker.starvation_every = get_settings().job_priority_starvation_every
                worker.work(
                    burst=burst,
                    with_scheduler=False,
                    logging_level=logging.getLevelName(logging.getLogger().level),
                    max_jobs=None if max_jobs is None else max_jobs - done,
                )
                done += worker.successful_job_count + worker.failed_job_count
            except (RedisConnectionError, RedisTimeoutError) as error:
                log.warning("the work horse lost Redis: %s", describe(error))
            stopping = burst or (worker is not None and worker.stop_requested)
            if stopping or (max_jobs is not None and done >= max_jobs):
                break
            log.warning("the RQ worker quit; starting it again once Redis answers")
            _wait_for_redis()
    except BaseException:
        log.exception("the work horse failed")
        code = 1
    finally:
        flush()
        os._exit(code)


def _wait_for_redis() -> None:
    """Sleep until Redis answers a PING; SIGTERM meanwhile ends the horse (nothing is running)."""
    while True:
        time.sleep(REDIS_RETRY_SECONDS)
        try:
            get_redis().ping()
            return
        except (RedisConnectionError, RedisTimeoutError):
            continue
