"""``claimcheck dev``: everything on one machine, with embedded servers when no URLs are given."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from service.embedded import EmbeddedPostgres, EmbeddedRedis
from service.migrate import upgrade
from service.settings import dev_state_path

PROCESSES = ("api", "worker", "scheduler")


def _secret_key(data_dir: Path) -> str:
    """SECRET_KEY from the environment, else one generated once and kept in the data dir."""
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    path = data_dir / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def _metrics_ports(first: str | None) -> dict[str, int]:
    """METRICS_PORT for each process (one port each, from the given one up), or none when unset."""
    if not first:
        return {}
    if not first.isdigit():
        raise SystemExit(f"METRICS_PORT must be a port number, not {first!r}")
    return {name: int(first) + offset for offset, name in enumerate(PROCESSES)}


def _terminate(children: list[subprocess.Popen[bytes]], grace: float = 15.0) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def run_dev(*, port: int, data_dir: Path) -> int:
    """Start servers as needed, migrate, run api + worker + scheduler until Ctrl-C; stop it all cleanly."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    postgres = None if os.environ.get("DATABASE_URL") else EmbeddedPostgres(data_dir / "postgres")
    redis = None if os.environ.get("REDIS_URL") else EmbeddedRedis(data_dir / "redis")
    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    state_file = dev_state_path(data_dir)
    try:
        database_url = postgres.start() if postgres else os.environ["DATABASE_URL"]
        redis_url = redis.start() if redis else os.environ["REDIS_URL"]
        state = {
            "database_url": database_url,
            "redis_url": redis_url,
            "secret_key": _secret_key(data_dir),
            "environment": "development",
        }
        state_file.write_text(json.dumps(state))
        state_file.chmod(0o600)
        upgrade(database_url)
        env = {
            **os.environ,
            **{name.upper(): value for name, value in state.items()},
            "DATA_DIR": str(data_dir),
            "PUBLIC_BASE_URL": os.environ.get("PUBLIC_BASE_URL", f"http://127.0.0.1:{port}"),
            # Trying it out means a receiver on this machine: let webhooks reach loopback over http.
            "WEBHOOK_ALLOWED_CIDRS": os.environ.get("WEBHOOK_ALLOWED_CIDRS", "127.0.0.0/8,::1/128"),
            "WEBHOOK_ALLOW_HTTP": os.environ.get("WEBHOOK_ALLOW_HTTP", "true"),
            # ... and a GraphiQL page and introspection to explore the schema with.
            "GRAPHQL_IDE": os.environ.get("GRAPHQL_IDE", "true"),
            "GRAPHQL_INTROSPECTION": os.environ.get("GRAPHQL_INTROSPECTION", "true"),
        }
        metrics_ports = _metrics_ports(os.environ.get("METRICS_PORT"))
        for name in PROCESSES:
            extra = ["--host", "127.0.0.1", "--port", str(port)] if name == "api" else []
            child_env = {**env, **({"METRICS_PORT": str(metrics_ports[name])} if metrics_ports else {})}
            command = [sys.executable, "-m", "service.cli", name, *extra]
            children.append(subprocess.Popen(command, env=child_env))
        print(f"\n  Claimcheck is running: GraphQL at http://127.0.0.1:{port}/graphql", flush=True)
        for name, metrics_port in metrics_ports.items():
            print(f"  {name} metrics at http://127.0.0.1:{metrics_port}/metrics", flush=True)
        print(
            "  Create a tenant and key in another shell:  .venv/bin/claimcheck tenants create acme",
            flush=True,
        )
        print("  Ctrl-C stops everything.\n", flush=True)
        while not stopping:
            exited = [child for child in children if child.poll() is not None]
            if exited:
                print(f"a process exited with code {exited[0].returncode}; stopping", file=sys.stderr)
                return 1
            time.sleep(0.5)
        return 0
    finally:
        _terminate(children)
        state_file.unlink(missing_ok=True)
        if redis:
            redis.stop()
        if postgres:
            postgres.stop()
        print("stopped", flush=True)
