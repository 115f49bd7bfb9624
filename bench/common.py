"""What the benchmark scripts share: a throwaway stack, service processes, CPU meters, percentiles.

`service_stack()` gives a fresh database (built by the migrations) on an embedded PostgreSQL and an
embedded Redis in a temporary directory, both deleted afterwards, unless DATABASE_URL / REDIS_URL are
set (then a fresh database is created on that server and dropped afterwards, and only the jobs queue
is emptied on that Redis). It creates a tenant with an API key and stops every process it started.
The project's bytecode is compiled first, as the image does at build (Dockerfile).
"""

from __future__ import annotations

import compileall
import contextlib
import json
import math
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from service.embedded import EmbeddedPostgres, EmbeddedRedis
from tests.servers import (
    ApiProcess,
    ServiceProcess,
    clear_caches,
    create_database,
    drop_database,
    service_env,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
SECRET_KEY = "bench-secret-key-" + "x" * 32
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

SPEECH_MUTATION = """
mutation Speak($input: GenerateSpeechInput!) {
  generateSpeech(input: $input) { job { id status } userErrors { code message } }
}
"""


@dataclass
class Stack:
    """A running throwaway environment and the processes started in it."""

    workdir: Path
    env: dict[str, str]
    api_key: str
    tenant_id: str
    processes: list[ServiceProcess] = field(default_factory=list)
    postgres: EmbeddedPostgres | None = None  # None when DATABASE_URL names a server
    redis: EmbeddedRedis | None = None  # None when REDIS_URL names a server

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}", "content-type": "application/json"}

    def start_api(
        self, workers: int, app: str | None = None, *, env: Mapping[str, str] | None = None, name: str = "api"
    ) -> ApiProcess:
        """The API as in production (`service.cli api --workers N`), or uvicorn on another app factory;
        env: settings over the stack's; name: its log's (several APIs may run side by side)."""
        log_path = self.workdir / f"{name}.log"
        env = {**self.env, **(env or {})}
        process = ApiProcess(env, log_path) if app is None else UvicornApi(app, env, log_path)
        process.args += ["--workers", str(workers)]
        process.env["PUBLIC_BASE_URL"] = process.url
        self.processes.append(process)
        process.start(timeout=60)
        return process

    def start_worker(self, public_base_url: str, *, env: Mapping[str, str] | None = None) -> ServiceProcess:
        """One RQ worker on the jobs queue (`service.cli worker`); env: settings over the stack's."""
        env = {**self.env, **(env or {}), "PUBLIC_BASE_URL": public_base_url}
        process = ServiceProcess(["worker"], env, self.workdir / "worker.log")
        self.processes.append(process)
        return process.start()


class _UvicornCommand(ServiceProcess):
    """Runs `python -m uvicorn APP --factory ARGS` instead of `python -m service.cli ARGS`."""

    app = ""
    cwd = REPO_ROOT

    def command(self) -> list[str]:
        return [sys.executable, "-m", "uvicorn", self.app, "--factory", "--proxy-headers", *self.args]


class UvicornApi(ApiProcess, _UvicornCommand):
    """ApiProcess (free port, wait for /healthz) serving an app factory given as `module:function`."""

    def __init__(self, app: str, env: Mapping[str, str], log_path: Path) -> None:
        super().__init__(env, log_path)
        self.app = app
        level = self.env.get("LOG_LEVEL", "info").lower()
        self.args = ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", level]
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), self.env.get("PYTHONPATH")]))


@contextlib.contextmanager
def service_stack(
    *, log_level: str = "INFO", workdir: Path | None = None, embedded: bool = False
) -> Iterator[Stack]:
    """A fresh database and Redis, the service environment, a tenant with an API key.

    workdir: where logs and data go (kept afterwards; by default a temporary directory, removed).
    embedded: start embedded servers even when DATABASE_URL / REDIS_URL are set.
    """
    compile_sources()
    saved_environ = dict(os.environ)
    given_database = None if embedded else os.environ.get("DATABASE_URL")
    given_redis = None if embedded else os.environ.get("REDIS_URL")
    with contextlib.ExitStack() as cleanup:
        if workdir is None:
            workdir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="claimcheck-bench-")))
        postgres = redis = None
        if given_database:
            server_url = given_database
        else:
            postgres = EmbeddedPostgres(workdir / "postgres", delete_on_stop=True)
            server_url = postgres.start()
            cleanup.callback(postgres.stop)
        if given_redis:
            redis_url = given_redis
        else:
            redis = EmbeddedRedis(workdir / "redis", persist=False)
            redis_url = redis.start()
            cleanup.callback(redis.stop)

        from service.migrate import upgrade

        database_url = create_database(server_url)
        cleanup.callback(drop_database, server_url, database_url)
        upgrade(database_url)

        env = service_env(database_url, redis_url, workdir / "artifacts", "http://127.0.0.1:0")
        env.update(ENVIRONMENT="production", SECRET_KEY=SECRET_KEY, LOG_LEVEL=log_level)
        os.environ.update(env)
        clear_caches()
        cleanup.callback(_restore_environ, saved_environ)
        cleanup.callback(_empty_jobs_queue)

        tenant_id, api_key = new_tenant("bench")
        stack = Stack(workdir, env, api_key, tenant_id, postgres=postgres, redis=redis)
        try:
            yield stack
        finally:
            for process in reversed(stack.processes):
                process.stop()


def compile_sources() -> None:
    """Compile the project's bytecode where it is stale, as the image does at build: with
    PYTHONDONTWRITEBYTECODE set (as in the image, and often on a developer's machine), each process
    the bench starts would otherwise compile the modules it imports from source."""
    for package in ("service", "callbacks", "observability"):
        compileall.compile_dir(REPO_ROOT / package, quiet=1)
    for scripts in ("bench", "tests"):  # their top-level modules: the benches' own, the test kinds
        compileall.compile_dir(REPO_ROOT / scripts, maxlevels=0, quiet=1)


def new_tenant(name: str) -> tuple[str, str]:
    """A new tenant of the stack's database with an API key (all scopes): (tenant id, key)."""
    from service.db import get_engine, session_scope
    from service.settings import get_settings
    from service.tenants.service import create_tenant

    with session_scope() as session:
        tenant, issued = create_tenant(session, name, server_secret=get_settings().secret_key)
    get_engine().dispose()
    return tenant.id, issued.full_key


def _empty_jobs_queue() -> None:
    from service.db import get_engine
    from service.jobs.priority import ORDERED_QUEUES
    from service.redis import get_queue

    removed = sum(get_queue(name).empty() for name in ORDERED_QUEUES)  # type: ignore[no-untyped-call]
    if removed:
        print(f"(emptied the jobs queue: {removed} RQ job(s) removed)")
    get_engine().dispose()


def _restore_environ(saved: dict[str, str]) -> None:
    os.environ.clear()
    os.environ.update(saved)
    clear_caches()


# CPU accounting from /proc (Linux): processes with their descendants, and the whole machine.


def children(pid: int) -> list[int]:
    """The live processes pid started (any of its threads), from /proc/PID/task/TID/children: a few
    small reads, where scanning every process of the machine cost about 17 ms of CPU, enough to skew a
    drain when sampled 20 times a second. Kernels without that file get the scan."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(child) for child in (task / "children").read_text().split()]
    except FileNotFoundError:
        if not Path(f"/proc/{pid}").exists():
            return []
        return _scanned_children(pid)
    except (OSError, ValueError):
        pass
    return found


def _scanned_children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def descendants(pid: int) -> list[int]:
    """The live processes started by pid, at any depth."""
    found: list[int] = []
    todo = children(pid)
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children(child))
    return found


def process_tree_cpu(pids: Sequence[int]) -> float:
    """CPU seconds (user + system) used so far by pids and all their live descendants."""
    total = 0.0
    for pid in {tree_pid for root in pids for tree_pid in (root, *descendants(root))}:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def context_switches(pids: Sequence[int]) -> int:
    """Voluntary and involuntary context switches so far of every thread of pids and their live
    descendants: a thread that waits for Python's lock, or hands it over, switches."""
    total = 0
    for pid in {tree_pid for root in pids for tree_pid in (root, *descendants(root))}:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    for line in (task / "status").read_text().splitlines():
                        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                            total += int(line.split()[1])
    return total


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, summed over all cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(values[:8])  # guest time is already counted in user
    idle = values[3] + values[4]
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


@dataclass
class CpuWindow:
    """CPU used over a time window, in cores (1.0 = one core busy the whole window)."""

    wall: float
    groups: dict[str, float]
    machine_busy: float
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)

    def describe(self) -> str:
        parts = [f"{name} {cores:.2f}" for name, cores in self.groups.items()]
        others = self.machine_busy - sum(self.groups.values())
        parts.append(f"everything else (Postgres, Redis, ...) {max(others, 0.0):.2f}")
        return f"CPU in cores of {self.cores}: machine {self.machine_busy:.2f} busy; " + ", ".join(parts)


class CpuMeter:
    """Measures CPU of named process groups and of the machine between start() and stop()."""

    def __init__(self, groups: Mapping[str, Sequence[int]]) -> None:
        self.groups = {name: list(pids) for name, pids in groups.items()}
        self._start: tuple[float, dict[str, float], float] | None = None

    def _read(self) -> tuple[float, dict[str, float], float]:
        busy, _ = machine_cpu()
        return time.monotonic(), {n: process_tree_cpu(p) for n, p in self.groups.items()}, busy

    def start(self) -> None:
        self._start = self._read()

    def stop(self, extra: Mapping[str, float] | None = None) -> CpuWindow:
        """The window since start(); extra: CPU seconds measured elsewhere (e.g. by client processes)."""
        assert self._start is not None, "start() first"
        t1, groups1, busy1 = self._read()
        t0, groups0, busy0 = self._start
        wall = t1 - t0
        used = {name: (groups1[name] - groups0[name]) / wall for name in groups1}
        used.update({name: seconds / wall for name, seconds in (extra or {}).items()})
        return CpuWindow(wall=wall, groups=used, machine_busy=(busy1 - busy0) / wall)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (fraction 0.5 = median, 0.99 = p99); nan when values is empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(math.ceil(fraction * len(ordered)), 1)
    return ordered[rank - 1]


def spread(values: Sequence[float]) -> str:
    """The median of some ratios, with their range when there are several (a bench's rounds)."""
    middle = statistics.median(values)
    if len(values) == 1:
        return f"{middle:.2f}"
    return f"{middle:.2f} ({min(values):.2f}-{max(values):.2f} over {len(values)} rounds)"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def summarize_logs(workdir: Path, levels: tuple[str, ...] = ("WARNING", "ERROR", "CRITICAL")) -> None:
    """Each service log's records at these levels grouped by message (ids and numbers masked), and the
    tail of its lines that are not JSON records (tracebacks printed outside logging)."""
    for path in sorted(workdir.glob("*.log")):
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        problems: Counter[str] = Counter()
        unstructured = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict):
                unstructured.append(line)
            elif record.get("level") in levels:
                said = str(record.get("message")).splitlines() or [""]
                cause = str(record.get("exception") or "").splitlines() or said[1:]
                text = f"{record['level']} {record.get('logger')}: {said[0]}"
                text += f" [{cause[-1].strip()}]" if cause else ""
                problems[
                    re.sub(
                        r"\d+(\.\d+)?", "N", re.sub(r"\b([a-z]+_[0-9A-Z]{26}|[0-9a-f]{32})\b", "<id>", text)
                    )
                ] += 1
        print(f"{path.name}: {len(lines)} lines, {sum(problems.values())} at {'/'.join(levels)}")
        for text, count in problems.most_common(10):
            print(f"    {count} x {text[:300]}")
        for line in unstructured[-10:]:
            print(f"    | {line[:300]}")
