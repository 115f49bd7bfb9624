"""RQ entry points for jobs: plain importable functions taking ids."""

from __future__ import annotations

from rq import get_current_job

from service.jobs import runner
from service.jobs.dispatch import TRACE_META
from service.jobs.horse import report_run


def run_job(job_id: str) -> None:
    """Run one job by id (enqueued under the job's own id), continuing the trace in the RQ job's meta."""
    rq_job = get_current_job()
    report_run(runner.run_job(job_id, rq_job.meta.get(TRACE_META) if rq_job else None))
