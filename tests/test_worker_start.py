"""A worker's start-up: it imports none of the API's libraries, and starts with the garbage collector
paused until it forks its work horses (service/collector.py)."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

import pytest

from service import collector
from tests.servers import service_env

API_ONLY = (
    "strawberry",
    "graphql",
    "fastapi",
    "starlette",
    "uvicorn",
    "httpx",
    "jinja2",
    "service.app",
    "service.schema",
    "service.portal",
)

# What a worker imports: the CLI, the worker (which imports the job tasks before it forks) and the
# built-in kinds (prepare_kinds).
WORKER_IMPORTS = """
import importlib, json, sys
import service.cli, service.worker
from service.jobs.kinds import BUILTIN_KIND_MODULES
for module in BUILTIN_KIND_MODULES:
    importlib.import_module(module)
print(json.dumps(sorted(sys.modules)))
"""

# `claimcheck worker --queues ...` up to where its start-up ends (the fork of its first horse, or the
# deliverer's loop when it works only on webhooks), where it reports the collector.
WORKER_UNTIL_STARTED = """
import asyncio, gc, sys
from service.jobs.supervisor import Supervisor
def report(*args):
    print(gc.isenabled(), gc.get_freeze_count())
    if asyncio.iscoroutine(args[0]):
        args[0].close()
Supervisor.run = asyncio.run = report
from service.cli import main
sys.exit(main(["worker", "--queues", sys.argv[1]]))
"""


def _python(code: str, env: dict[str, str] | None = None, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_worker_imports_none_of_the_api_only_libraries() -> None:
    modules = json.loads(_python(WORKER_IMPORTS))
    pulled = [
        module
        for module in modules
        if any(module.split(".")[: len(name.split("."))] == name.split(".") for name in API_ONLY)
    ]
    assert pulled == []


@pytest.mark.parametrize("queue", ["jobs", "webhooks"])
def test_a_worker_starts_work_with_its_start_up_frozen_and_the_collector_on(
    queue: str, tmp_path: Path
) -> None:
    # Nothing connects before its start-up ends: the URLs need no servers.
    env = service_env(
        "postgresql://claimcheck@127.0.0.1:9/none", "redis://127.0.0.1:9/0", tmp_path, "http://127.0.0.1:9"
    )
    enabled, frozen = _python(WORKER_UNTIL_STARTED, env, queue).split()
    assert enabled == "True"
    assert int(frozen) > 10_000  # the modules, classes and mappers made at start-up


def test_resuming_without_a_pause_changes_nothing() -> None:
    frozen = gc.get_freeze_count()
    collector.resume()
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen
