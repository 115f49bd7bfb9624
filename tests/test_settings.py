"""Every setting is checked when the settings load: a bad value stops the process at start-up with a
message naming the variable (and never repeating a secret), not a failure at first use."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from service.settings import ConfigurationError, Settings, load_settings

SECRET = "settings-test-secret-" + "x" * 20

A_FERNET_KEY = "Fze0bNQX5drA51Z9UqFlqOFu95_0xEJcFLSDhc-To0s="  # fixed: xdist workers collect the same ids

BAD_VALUES = [
    ("SECRET_KEY", "", "SECRET_KEY: not set"),
    ("SECRET_KEY", "too-short", "SECRET_KEY: must be at least 16 characters"),
    (
        "WEBHOOK_ALLOWED_CIDRS",
        "127.0.0.0/8,10.0.0.1/8",
        "WEBHOOK_ALLOWED_CIDRS: '10.0.0.1/8' is not a network",
    ),
    ("WEBHOOK_ALLOWED_CIDRS", "localhost", "WEBHOOK_ALLOWED_CIDRS: 'localhost' is not a network"),
    ("ENCRYPTION_KEYS", f"{A_FERNET_KEY},not-a-fernet-key", "ENCRYPTION_KEYS: key 2 of 2"),
    ("PUBLIC_BASE_URL", "ftp://files.example.com", "PUBLIC_BASE_URL: 'ftp://files.example.com' must be"),
    ("PUBLIC_BASE_URL", "api.example.com", "PUBLIC_BASE_URL: 'api.example.com' must be an http"),
    ("PUBLIC_BASE_URL", "https://api.example.com:99999", "PUBLIC_BASE_URL:"),
    ("PUBLIC_BASE_URL", "https://api.example.com/?x=1", "PUBLIC_BASE_URL: 'https://api.example.com/?x=1'"),
    ("DATABASE_URL", "mysql://root:hunter22@db/claimcheck", "DATABASE_URL: must be a postgresql:// URL"),
    ("DATABASE_URL", "not a url", "DATABASE_URL: is not a URL"),
    ("REDIS_URL", "http://:hunter22@redis:6379/0", "REDIS_URL: is not a Redis URL"),
    (
        "REDIS_URL",
        "redis://:hunter22@redis:6379/zero",
        "REDIS_URL: the database after the host must be a number",
    ),
    ("DATABASE_DIRECT_URL", "mysql://root:hunter22@db/x", "DATABASE_DIRECT_URL: must be a postgresql:// URL"),
    ("REDIS_SENTINELS", "10.0.0.1:26379,10.0.0.2", "REDIS_SENTINELS: '10.0.0.2' is not host:port"),
    ("REDIS_SENTINELS", "sentinel:port", "REDIS_SENTINELS: 'sentinel:port' is not host:port"),
    ("KIND_MODULES", '["tests.no_such_kinds"]', "KIND_MODULES: no module named 'tests.no_such_kinds'"),
    ("STORAGE_BACKEND", "gcs", "GCS_BUCKET must be set when STORAGE_BACKEND is gcs"),
    ("JOB_STUCK_AFTER_SECONDS", "5", "JOB_STUCK_AFTER_SECONDS must exceed JOB_HEARTBEAT_SECONDS"),
    ("DOWNLOAD_URL_DEFAULT_EXPIRY", "999999999", "DOWNLOAD_URL_DEFAULT_EXPIRY must not exceed"),
    ("WEBHOOK_RETRY_SCHEDULE", "[]", "WEBHOOK_RETRY_SCHEDULE: List should have at least 1 item"),
    (
        "WEBHOOK_RETRY_SCHEDULE",
        "[0, -5]",
        "WEBHOOK_RETRY_SCHEDULE (1): Input should be greater than or equal",
    ),
    ("WEBHOOK_RETENTION_DAYS", "0.5", "WEBHOOK_RETENTION_DAYS: Input should be greater than or equal to 1"),
    ("PROGRESS_MILESTONES", "[0.5, 50]", "PROGRESS_MILESTONES (1): Input should be less than 1"),
    ("PLANS", "{not json", "PLANS: not valid JSON"),
    ("LOG_LEVEL", "loud", "LOG_LEVEL: 'loud' is not a level"),
    ("LOG_FORMAT", "xml", "LOG_FORMAT: Input should be 'json' or 'text'"),
    ("WEBHOOK_TIMEOUT_SECONDS", "soon", "WEBHOOK_TIMEOUT_SECONDS: Input should be a valid number"),
    ("TRACE_URL_TEMPLATE", "http://jaeger:16686/trace/", "TRACE_URL_TEMPLATE: must contain {trace_id}"),
    (
        "TRACE_URL_TEMPLATE",
        "javascript:alert({trace_id})",
        "TRACE_URL_TEMPLATE: must be an http:// or https://",
    ),
    ("PORTAL_SESSION_SECONDS", "5", "PORTAL_SESSION_SECONDS: Input should be greater than or equal to 60"),
]


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An environment holding only SECRET_KEY, and a data dir with no `claimcheck dev` running."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("SECRET_KEY", SECRET)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    return tmp_path


def test_the_defaults_with_a_secret_key_load(clean_environ: Path) -> None:
    settings = load_settings()
    assert settings.secret_key == SECRET
    assert settings.public_base_url == "http://127.0.0.1:8000"


@pytest.mark.parametrize(("name", "value", "expected"), BAD_VALUES)
def test_a_bad_value_fails_loading_with_a_message_naming_the_variable(
    clean_environ: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert caught.value.code == "CONFIGURATION"
    assert expected in caught.value.message
    assert "hunter22" not in caught.value.message
    assert "not-a-fernet-key" not in caught.value.message


def test_a_missing_secret_key_is_refused_whatever_the_environment(
    clean_environ: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SECRET_KEY")
    for environment in ("development", "test", "production"):
        monkeypatch.setenv("ENVIRONMENT", environment)
        with pytest.raises(ConfigurationError, match="SECRET_KEY: not set"):
            load_settings()


def test_without_secret_key_a_running_dev_servers_key_is_used(
    clean_environ: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SECRET_KEY")
    (clean_environ / "dev.json").write_text(json.dumps({"secret_key": "from-the-dev-state-" + "y" * 20}))
    assert load_settings().secret_key == "from-the-dev-state-" + "y" * 20


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("command", [["api", "--port", "0"], ["worker"], ["scheduler"], ["migrate"]])
def test_each_process_refuses_to_start_with_a_bad_setting_and_names_it(
    env: dict[str, str], tmp_path: Path, command: list[str]
) -> None:
    bad = {**env, "DATA_DIR": str(tmp_path), "WEBHOOK_ALLOWED_CIDRS": "10.0.0.0/33"}
    result = _cli(bad, *command)
    assert result.returncode == 2, result.stderr
    assert "error (CONFIGURATION): invalid settings: WEBHOOK_ALLOWED_CIDRS: '10.0.0.0/33'" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_operator_command_refuses_the_old_public_development_secret(
    env: dict[str, str], tmp_path: Path
) -> None:
    """No SECRET_KEY and no running dev: refused even with ENVIRONMENT=development (was: a public key)."""
    without = {k: v for k, v in env.items() if k != "SECRET_KEY"}
    result = _cli(
        {**without, "ENVIRONMENT": "development", "DATA_DIR": str(tmp_path)}, "tenants", "create", "x"
    )
    assert result.returncode == 2, result.stdout
    assert "SECRET_KEY: not set" in result.stderr
    assert "API key" not in result.stdout


@pytest.mark.parametrize("missing", ["DATABASE_URL", "REDIS_URL"])
@pytest.mark.parametrize("command", ["api", "worker", "scheduler"])
def test_a_server_process_refuses_to_start_without_its_database_or_redis(
    env: dict[str, str], tmp_path: Path, command: str, missing: str
) -> None:
    """No URL and no running dev in DATA_DIR: a clear refusal, not a loop of failing sweeps."""
    without = {k: v for k, v in env.items() if k != missing}
    result = _cli({**without, "DATA_DIR": str(tmp_path)}, command)
    assert result.returncode == 2, result.stderr
    assert f"error (CONFIGURATION): {missing} is not set, and no `claimcheck dev` is running" in result.stderr
    assert "Traceback" not in result.stderr


def test_migrate_without_a_database_url_says_so(env: dict[str, str], tmp_path: Path) -> None:
    without = {k: v for k, v in env.items() if k != "DATABASE_URL"}
    result = _cli({**without, "DATA_DIR": str(tmp_path)}, "migrate")
    assert result.returncode == 2, result.stderr
    assert "DATABASE_URL is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_with_sentinels_redis_needs_no_url_and_listen_defaults_to_the_database(
    clean_environ: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_SENTINELS", "10.0.0.1:26379, sentinel-2:26380,[::1]:26381")
    monkeypatch.setenv("DATABASE_URL", "postgresql://claimcheck@pgbouncer:6432/claimcheck")
    settings = load_settings()
    assert settings.sentinel_addresses == [("10.0.0.1", 26379), ("sentinel-2", 26380), ("::1", 26381)]
    assert settings.required_url("redis_url") == ""
    assert settings.listen_url == "postgresql://claimcheck@pgbouncer:6432/claimcheck"
    monkeypatch.setenv("DATABASE_DIRECT_URL", "postgresql://claimcheck@postgres:5432/claimcheck")
    assert load_settings().listen_url == "postgresql://claimcheck@postgres:5432/claimcheck"
