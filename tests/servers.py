"""Real servers for the test session: Postgres and Redis (given or embedded), API and worker processes."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
import psycopg
from sqlalchemy.engine import make_url

from service.embedded import free_port


def create_database(server_url: str) -> str:
    """A fresh, empty database on the server at server_url; returns its URL."""
    name = f"claimcheck_test_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(server_url, name)


def drop_database(server_url: str, database_url: str) -> None:
    name = make_url(database_url).database
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def with_database(url: str, name: str) -> str:
    """url pointing at database name instead (keeps host, socket, user)."""
    return make_url(url).set(database=name).render_as_string(hide_password=False)


class ServiceProcess:
    """One `claimcheck` process (api, worker, scheduler) run as in production, logging to a file."""

    def __init__(self, args: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.args = args
        self.env = dict(env)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    cwd: Path | None = None
    """Where the process runs (None: here)."""

    def command(self) -> list[str]:
        """The command line: `python -m service.cli ARGS`."""
        return [sys.executable, "-m", "service.cli", *self.args]

    def start(self) -> ServiceProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(), env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None, "start() first"
        return self.process.pid

    def stop(self, timeout: float = 10) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class ApiProcess(ServiceProcess):
    """The API under uvicorn on a free loopback port."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.port = free_port()
        super().__init__(["api", "--host", "127.0.0.1", "--port", str(self.port)], env, log_path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> ApiProcess:
        super().start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            assert self.process is not None
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"API did not start:\n{self.log()}")


def service_env(database_url: str, redis_url: str, storage_dir: Path, public_base_url: str) -> dict[str, str]:
    """The environment every test process (and this one) runs with."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_"))},
        "ENVIRONMENT": "test",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": "test-secret-key-" + "x" * 32,
        "STORAGE_DIR": str(storage_dir),
        "PUBLIC_BASE_URL": public_base_url,
        "OUTBOX_GRACE_SECONDS": "0.5",
        "SCHEDULER_INTERVAL_SECONDS": "0.5",
        "LOG_LEVEL": "INFO",
        "WEBHOOK_ALLOWED_CIDRS": "127.0.0.0/8",
        "WEBHOOK_ALLOW_HTTP": "true",
        "WEBHOOK_RETRY_SCHEDULE": "[0, 1, 1, 1]",
        "WEBHOOK_POLL_SECONDS": "0.2",
        "WEBHOOK_TIMEOUT_SECONDS": "2",
        "KIND_MODULES": '["tests.plugin_kinds"]',
        "JOB_RETRY_BASE_SECONDS": "0.2",
        "JOB_HEARTBEAT_SECONDS": "0.5",
        "JOB_STUCK_AFTER_SECONDS": "3",
        "JOB_KILL_GRACE_SECONDS": "1",
        # Plans roomy enough for every test; tests of limits set a tenant's own (tenants.limits).
        "PLANS": json.dumps({"free": ROOMY_PLAN, "pro": ROOMY_PLAN}),
        "JOB_DEFER_SECONDS": "0.3",
        "KEY_RECHECK_SECONDS": "1",
    }


ROOMY_PLAN = {
    "mutations_per_minute": 60_000,
    "burst": 10_000,
    "max_running": 100,
    "max_queued": 100_000,
    "max_text_chars": 5_000,
    "max_webhook_endpoints": 100,
}


def clear_caches() -> None:
    """Forget settings, engine, Redis client and storage so they are rebuilt from os.environ."""
    from service.db import get_engine
    from service.redis import get_redis
    from service.settings import get_settings
    from service.storage.factory import get_storage

    for cached in (get_settings, get_engine, get_redis, get_storage):
        cached.cache_clear()
