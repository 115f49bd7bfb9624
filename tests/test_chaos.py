"""The chaos run in small: every fault once, and nothing may be lost (bench/chaos.py is the full run).

It starts its own embedded PostgreSQL and Redis (it crashes and restarts them), API, workers, scheduler
and receiver, so it does not disturb the session's servers.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bench.chaos import ChaosConfig, fleet_config, run

EACH_FAULT_ONCE = ChaosConfig(
    jobs=40,
    tenants=2,
    workers=2,
    seed=7,
    submit_rate=4,
    worker_kills=1,
    redis_restarts=1,
    postgres_restarts=1,
    api_kills=1,
    receiver_windows=1,
    window_seconds=3,
    drain_timeout=240,
)


def test_through_every_fault_no_job_and_no_webhook_event_is_lost(tmp_path: Path) -> None:
    report = run(EACH_FAULT_ONCE, tmp_path)
    logs = "\n".join(
        f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}" for log in tmp_path.glob("*.log")
    )
    summary = "\n".join(report.lines())
    assert report.faults_skipped == {}, summary
    assert sum(report.faults.values()) == 7, summary  # one of each kind
    assert report.submitted == EACH_FAULT_ONCE.jobs, summary
    assert report.ok, f"{summary}\n{logs}"
    assert report.unplanned_exits == {}, f"a process died of a fault it should outlive\n{summary}\n{logs}"
    assert report.lost == 0
    assert report.events_missing == 0
    assert report.signature_failures == 0
    assert report.events_expected >= EACH_FAULT_ONCE.jobs * 4  # queued, started, succeeded at least, x2


FLEET = dataclasses.replace(
    fleet_config(
        ChaosConfig(jobs=40, tenants=2, seed=11, submit_rate=4, window_seconds=3, drain_timeout=240),
        pgbouncer=True,
        sentinel=True,
    ),
    pgbouncer_restarts=0,  # a restart under a running job makes it run again (bench.chaos --fleet has it)
)


def test_a_fleet_through_pgbouncer_and_sentinel_loses_nothing_and_runs_no_job_twice(tmp_path: Path) -> None:
    """2 APIs, 2 schedulers, 4 workers through PgBouncer; schedulers and an API killed, Redis failed
    over twice: no job lost, none run twice (no worker killed, no database outage), every event
    delivered."""
    report = run(FLEET, tmp_path)
    summary = "\n".join(report.lines())
    assert report.faults_skipped == {}, summary
    assert report.faults["redis-failover"] == 2, summary
    assert report.ok, summary
    assert report.lost == report.ran_more_than_once == 0, summary
