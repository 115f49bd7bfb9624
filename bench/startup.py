"""What a `claimcheck worker` costs before it is useful: its CPU and time from start to its first job done.

Each run queues one one-sentence speech job, starts a worker as in production (`service.cli worker`,
both queues) and samples the CPU of the worker and its horses from /proc until the job is SUCCEEDED;
then stops the worker. The figure includes that one job's run (the work alone takes a few ms of it).

    python -m bench.startup [--runs 8]
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.common import Stack, service_stack
from bench.jobs import cpu_fields, worker_cpu

POLL_SECONDS = 0.01


def _job_status(job_id: str) -> str:
    from sqlalchemy import text

    from service.db import session_scope

    with session_scope() as session:
        status = session.execute(text("SELECT status FROM jobs WHERE id = :id"), {"id": job_id}).scalar_one()
    return str(status)


def first_job(stack: Stack, number: int) -> tuple[float, float, float]:
    """One worker start to its first job SUCCEEDED: CPU seconds of the worker with its horses, and of
    the worker process alone; seconds."""
    from service.db import session_scope
    from service.jobs.service import create_job

    with session_scope() as session:
        job_id = create_job(session, stack.tenant_id, "speech", {"text": f"Start-up run {number}."}, None).id
    started = time.perf_counter()
    worker = stack.start_worker("http://127.0.0.1:9")
    cpu = own = 0.0
    while True:
        cpu, own = max(cpu, worker_cpu(worker.pid)), max(own, cpu_fields(worker.pid, 2))
        status = _job_status(job_id)
        if status != "QUEUED" and status != "RUNNING":
            break
        if worker.process is not None and worker.process.poll() is not None:
            raise RuntimeError(f"the worker exited {worker.process.returncode}:\n{worker.log()}")
        time.sleep(POLL_SECONDS)
    seconds = time.perf_counter() - started
    cpu, own = max(cpu, worker_cpu(worker.pid)), max(own, cpu_fields(worker.pid, 2))
    worker.stop()
    stack.processes.remove(worker)
    if status != "SUCCEEDED":
        raise RuntimeError(f"job {job_id} ended {status}:\n{worker.log()}")
    return cpu, own, seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=8, help="worker starts")
    args = parser.parse_args()
    with service_stack(log_level="WARNING") as stack:
        runs = [first_job(stack, number) for number in range(args.runs)]
    print("worker start → first job SUCCEEDED, per run (CPU s, of it the worker process alone; wall s):")
    print("  " + "  ".join(f"{cpu:.2f} ({own:.2f}) {seconds:.2f}" for cpu, own, seconds in runs))
    for index, name in enumerate(("CPU", "CPU of the worker process alone", "wall")):
        values = [run[index] for run in runs]
        median, least = statistics.median(values), min(values)
        print(f"worker start-up {name}: median {median:.3f} s, min {least:.3f} s")


if __name__ == "__main__":
    main()
