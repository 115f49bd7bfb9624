"""Time from generateSpeech to SUCCEEDED for one-sentence jobs, and how much of it is queueing.

Runs the API (uvicorn) and one worker as in production on a throwaway PostgreSQL and Redis, then
submits N jobs one after another through the SDK (service.client); each is polled until it is
terminal. The split comes from the job's own timestamps: queued = started_at - created_at (commit,
enqueue, the worker picking it up and forking), running = finished_at - started_at (synthesis and
upload).

    python -m bench.e2e [--jobs 200] [--poll-ms 5]
"""

from __future__ import annotations

import argparse
import time

from bench.common import ms, percentile, service_stack
from service.client import Claimcheck
from service.client.generated_sync.input_types import GenerateSpeechInput
from service.client.settings import TERMINAL


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--poll-ms", type=float, default=5, help="client polling interval")
    args = parser.parse_args()
    with service_stack(log_level="WARNING") as stack:
        api = stack.start_api(1)
        stack.start_worker(api.url)
        totals: list[float] = []
        ids: list[str] = []
        with Claimcheck(api.url, stack.api_key, timeout=30) as client:
            for index in range(args.jobs + 5):
                text = f"This is sentence number {index}, spoken aloud."
                started = time.perf_counter()
                job = client.generate_speech(GenerateSpeechInput(text=text)).generate_speech.job
                assert job is not None
                job_id = job.id
                while client.job(job_id).status.value not in TERMINAL:
                    time.sleep(args.poll_ms / 1000)
                if index >= 5:  # the first few warm up the worker and the connection pools
                    totals.append(time.perf_counter() - started)
                    ids.append(job_id)
        queued, running, failed = _split(ids)
        print(f"{len(totals)} one-sentence speech jobs, one worker, polled every {args.poll_ms:g} ms")
        for label, values in [
            ("mutation -> SUCCEEDED, seen by the client", totals),
            ("queued  (created -> started)", queued),
            ("running (started -> finished)", running),
        ]:
            print(f"{label}: p50 {ms(percentile(values, 0.5))}, p99 {ms(percentile(values, 0.99))}")
        if failed:
            print(f"WARNING: {failed} job(s) did not succeed")


def _split(ids: list[str]) -> tuple[list[float], list[float], int]:
    """Per job: seconds queued, seconds running; and how many did not succeed."""
    from sqlmodel import col, select

    from service.db import session_scope
    from service.jobs.models import Job

    with session_scope() as session:
        jobs = session.exec(select(Job).where(col(Job.id).in_(ids))).all()
    queued, running, failed = [], [], 0
    for job in jobs:
        if job.started_at is None or job.finished_at is None or job.status != "SUCCEEDED":
            failed += 1
            continue
        queued.append((job.started_at - job.created_at).total_seconds())
        running.append((job.finished_at - job.started_at).total_seconds())
    return queued, running, failed + len(ids) - len(jobs)


if __name__ == "__main__":
    main()
