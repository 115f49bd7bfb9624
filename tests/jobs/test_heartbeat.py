"""A run's heartbeat, in this process on real Postgres (JOB_HEARTBEAT_SECONDS is 0.5 here): heartbeat_at
moves while a handler runs, for each job a process runs in turn, beaten by one thread that outlives
the runs, and it stops moving once a run has ended."""

from __future__ import annotations

import threading
import time
from datetime import datetime

from sqlalchemy import text

from service.db import session_scope
from service.jobs.runner import run_job
from tests.conftest import TenantHandle, commit_job_without_enqueue

RUN_SECONDS = 1.3  # one step: the handler reports progress as it begins and as it ends


def _heartbeat_at(job_id: str) -> datetime:
    with session_scope() as session:
        found = session.execute(text("SELECT heartbeat_at FROM jobs WHERE id = :id"), {"id": job_id}).scalar()
    assert isinstance(found, datetime), found
    return found


def _run_watched(job_id: str) -> tuple[set[datetime], set[threading.Thread]]:
    """Run the job here; the heartbeat_at values seen while it ran, and the heartbeat threads alive then."""
    seen: set[datetime] = set()
    beaters: set[threading.Thread] = set()  # the objects, whose identity no later thread can take
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.05):
            seen.add(_heartbeat_at(job_id))
            beaters.update(t for t in threading.enumerate() if t.name.startswith("heartbeat"))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        run_job(job_id)
    finally:
        done.set()
        watcher.join()
    return seen, beaters


def test_one_thread_beats_for_each_run_in_turn_and_lets_go_of_an_ended_one(tenant: TenantHandle) -> None:
    slow = {"seconds": RUN_SECONDS, "steps": 1}
    first = commit_job_without_enqueue(tenant.id, "test-slow", slow)
    second = commit_job_without_enqueue(tenant.id, "test-slow", slow)

    first_beats, first_beaters = _run_watched(first)
    ended_at = _heartbeat_at(first)
    second_beats, second_beaters = _run_watched(second)
    time.sleep(1.1)  # over two heartbeat periods with no run

    # heartbeat_at is written by the start, by the first progress (reported at once, so the heartbeat
    # writes it once due, 0.25 s later), by beats 0.5 s and 1 s in, and by the last progress (which the
    # watcher may not see). Without the heartbeat thread only the start's value would be seen; a beat
    # can come late on a loaded machine (one run of the suite saw three values), so three are asked.
    assert len(first_beats) >= 3, sorted(first_beats)
    assert len(second_beats) >= 3, sorted(second_beats)
    assert _heartbeat_at(first) == ended_at  # nothing beat for it after its run, through the second run
    assert len(first_beaters) == 1
    assert first_beaters == second_beaters  # the same thread, kept for the next run
