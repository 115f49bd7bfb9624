"""A tenant's terminal session, under a real pseudo-terminal: the progress bar, and Ctrl-C."""

from __future__ import annotations

import re
import sys

import pexpect

from tests.conftest import GraphQLClient, TenantHandle
from tests.servers import ApiProcess, ServiceProcess
from tests.tenant_cli.conftest import Claimcheck, default_ctrl_c, start_job, tenant_env


def test_a_terminal_shows_a_moving_progress_bar_and_ctrl_c_leaves_the_job_running(
    env: dict[str, str],
    api: ApiProcess,
    worker: ServiceProcess,
    tenant: TenantHandle,
    gql: GraphQLClient,
    claimcheck: Claimcheck,
) -> None:
    job_id = start_job(tenant.id, "test-slow", {"seconds": 8, "steps": 40})
    child = pexpect.spawn(
        sys.executable,
        ["-m", "service.cli", "jobs", "wait", job_id],
        env={**tenant_env(env, api.url, tenant.api_key), "TERM": "xterm-256color", "COLUMNS": "120"},
        encoding="utf-8",
        dimensions=(24, 120),
        timeout=30,
        preexec_fn=default_ctrl_c,
    )
    bar = r"step (\d+) of 40 at [\d.]+[^\r\n]*?━[^\r\n]*?(\d+)%[^\r\n]*?RUNNING"  # message, bar, percent
    child.expect(bar)
    first = _step_and_percent(child)
    while True:  # redrawn as the job moves (each expect fails after its timeout, or at the end)
        child.expect(bar)
        later = _step_and_percent(child)
        if later[0] > first[0]:
            break
    assert first[1] <= later[1] < 100

    child.sendintr()
    child.expect(
        f"stopped following {job_id}; the job keeps running. Resume with: claimcheck jobs wait {job_id}"
    )
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    assert not re.search(r"Traceback", child.before or "")

    assert gql.wait_for_job(job_id)["status"] == "SUCCEEDED"  # not canceled: it ran to its end
    resumed = claimcheck("jobs", "wait", job_id)
    assert resumed.returncode == 0
    assert "SUCCEEDED" in resumed.stdout


def _step_and_percent(child: pexpect.spawn[str]) -> tuple[int, int]:
    match = child.match
    assert isinstance(match, re.Match)
    return int(match.group(1)), int(match.group(2))
