"""`claimcheck dev` as a new user runs it: the only command that needs no SECRET_KEY (it makes one and
hands it to its processes and to commands run beside it), with GraphiQL and introspection on."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.embedded import free_port
from service.settings import Settings
from tests.servers import create_database, drop_database


@dataclass
class Dev:
    url: str
    data_dir: Path
    env: dict[str, str]
    log: Path
    metrics_port: int


def _consecutive_free_ports(count: int) -> int:
    """The first of `count` consecutive loopback ports that nothing listens on right now."""
    while True:
        first = free_port()
        probes = [socket.socket() for _ in range(count)]
        try:
            for offset, probe in enumerate(probes):
                probe.bind(("127.0.0.1", first + offset))
            return first
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()


def _user_environ() -> dict[str, str]:
    """This machine's environment without any of the service's settings (or the tests' ones)."""
    settings = {name.upper() for name in Settings.model_fields}
    return {k: v for k, v in os.environ.items() if k not in settings and not k.startswith("OTEL_")}


@pytest.fixture(scope="module")
def dev(postgres_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    """`claimcheck dev` on a fresh database and its own embedded Redis, with no SECRET_KEY given."""
    database_url = create_database(postgres_server_url)
    data_dir = tmp_path_factory.mktemp("dev-data")
    log = data_dir.parent / "dev.log"
    port = free_port()
    metrics_port = _consecutive_free_ports(3)
    env = {**_user_environ(), "DATABASE_URL": database_url, "METRICS_PORT": str(metrics_port)}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "dev", "--port", str(port), "--data-dir", str(data_dir)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    yield Dev(url, data_dir, env, log, metrics_port)
    process.send_signal(signal.SIGINT)
    process.wait(60)
    drop_database(postgres_server_url, database_url)


def test_dev_generates_a_private_secret_key_and_commands_beside_it_use_it(dev: Dev) -> None:
    key_file = dev.data_dir / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    secret = key_file.read_text().strip()
    assert len(secret) >= 32
    assert json.loads((dev.data_dir / "dev.json").read_text())["secret_key"] == secret

    # No SECRET_KEY in the environment: the command reads the running dev's.
    created = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "tenants",
            "create",
            "acme",
            "--json",
            "--data-dir",
            str(dev.data_dir),
        ],
        env={k: v for k, v in dev.env.items() if k != "DATABASE_URL"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    api_key = json.loads(created.stdout)["api_key"]
    viewer = httpx.post(
        f"{dev.url}/graphql",
        json={"query": "{ viewer { name } }"},
        headers={"authorization": f"Bearer {api_key}"},
    )
    assert viewer.json() == {"data": {"viewer": {"name": "acme"}}}, viewer.text


def test_dev_serves_graphiql_and_introspection(dev: Dev) -> None:
    page = httpx.get(f"{dev.url}/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200
    assert "graphiql" in page.text.lower()
    created = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "tenants",
            "create",
            "explorer",
            "--json",
            "--data-dir",
            str(dev.data_dir),
        ],
        env=dev.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    api_key = json.loads(created.stdout)["api_key"]
    schema = httpx.post(
        f"{dev.url}/graphql",
        json={"query": '{ __type(name: "Job") { fields { name } } }'},
        headers={"authorization": f"Bearer {api_key}"},
    ).json()
    assert {"id", "status", "artifact"} <= {field["name"] for field in schema["data"]["__type"]["fields"]}


def test_dev_gives_each_process_its_own_metrics_port(dev: Dev) -> None:
    """One METRICS_PORT for dev: the api, worker and scheduler take it and the next two."""
    for port in (dev.metrics_port, dev.metrics_port + 1, dev.metrics_port + 2):
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, dev.log.read_text()
                time.sleep(0.2)
        assert response.status_code == 200
        assert "process_" in response.text
    assert httpx.get(f"{dev.url}/metrics").status_code == 404
