"""Running the `claimcheck` script's tenant commands as a user does: a process, an API key, a URL."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import TenantHandle
from tests.servers import ApiProcess

CLI = [sys.executable, "-m", "service.cli"]


def tenant_env(env: dict[str, str], api_url: str, api_key: str) -> dict[str, str]:
    """A tenant's shell: only the API's URL and a key (no server settings)."""
    shell = {k: v for k, v in env.items() if not k.startswith(("DATABASE_", "REDIS_", "SECRET_KEY"))}
    return {**shell, "CLAIMCHECK_API_URL": api_url, "CLAIMCHECK_API_KEY": api_key}


def default_ctrl_c() -> None:
    """In the child before it runs: Ctrl-C interrupts it, as in a user's shell. A test session started
    in the background of a non-interactive shell ignores SIGINT, and its children would inherit that
    (Python keeps an ignored SIGINT ignored), so the tests of Ctrl-C would see nothing happen."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


Claimcheck = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def claimcheck(env: dict[str, str], api: ApiProcess, tenant: TenantHandle) -> Claimcheck:
    """`claimcheck ARGS...` as the tenant, to completion; `key=` another key."""

    def run(
        *args: str, key: str | None = None, timeout: float = 60, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args],
            env=tenant_env(env, api.url, tenant.api_key if key is None else key),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,
        )

    return run


def start_job(tenant_id: str, kind: str, params: dict[str, Any]) -> str:
    """A job of a test kind, created and enqueued as a request would (the API starts only speech and
    export jobs)."""
    from service.db import session_scope
    from service.jobs.service import create_job

    with session_scope() as session:
        return create_job(session, tenant_id, kind, params, None).id
