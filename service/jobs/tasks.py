"""RQ entry points for jobs: plain importable functions taking ids."""

from __future__ import annotations

from service.jobs import runner


def run_job(job_id: str) -> None:
    """Run one job by id (enqueued under the job's own id)."""
    runner.run_job(job_id)
