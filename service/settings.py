"""Configuration from the environment (pydantic-settings), validated once at start-up."""

from __future__ import annotations

import copy
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.plans import DEFAULT_PLANS, REQUIRED_LIMITS, missing_limits

DEV_SECRET_KEY = "dev-insecure-secret-key-change-me"  # noqa: S105 - refused outside development
DEV_STATE_FILE = "dev.json"


class Settings(BaseSettings):
    """Every setting is an environment variable of the same name (upper case)."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    environment: Literal["development", "production", "test"] = "production"
    database_url: str = ""
    redis_url: str = ""
    data_dir: Path = Path(".data")

    secret_key: str = DEV_SECRET_KEY
    public_base_url: str = "http://127.0.0.1:8000"

    storage_backend: Literal["local", "gcs"] = "local"
    storage_dir: Path | None = None
    gcs_bucket: str = ""
    gcs_project: str = ""  # default: the credentials' project
    gcs_chunk_bytes: int = Field(default=16 * 1024 * 1024, ge=256 * 1024, multiple_of=256 * 1024)
    gcs_signer_email: str = ""  # IAM signBlob account when the credentials name none (or another one)
    gcs_retry_seconds: float = Field(default=120, gt=0)
    storage_emulator_host: str = ""  # Google's own variable: API calls and signed URLs go there

    max_request_bytes: int = Field(default=1_000_000, ge=1_000)
    download_url_default_expiry: int = Field(default=900, ge=1)
    download_url_max_expiry: int = Field(default=7 * 24 * 3600, ge=1)

    speech_max_chars: int = Field(default=5_000, ge=1)
    progress_milestones: list[float] = [0.25, 0.5, 0.75]

    outbox_grace_seconds: float = Field(default=5.0, ge=0)
    scheduler_interval_seconds: float = Field(default=2.0, gt=0)

    # Jobs: extra kind modules to load, retries of transient failures, liveness of running jobs.
    kind_modules: list[str] = []
    job_retry_base_seconds: float = Field(default=5.0, ge=0)
    job_retry_max_seconds: float = Field(default=600.0, ge=0)
    job_heartbeat_seconds: float = Field(default=10.0, gt=0)
    job_stuck_after_seconds: float = Field(default=60.0, gt=0)
    # Retention: finished jobs (and their files) are deleted after these many days; a succeeded
    # job's file may go sooner (the job then reads EXPIRED until its row goes too).
    retention_succeeded_days: float = Field(default=14, gt=0)
    retention_canceled_days: float = Field(default=14, gt=0)
    retention_failed_days: float = Field(default=30, gt=0)
    retention_artifact_days: float = Field(default=14, gt=0)
    retention_batch: int = Field(default=200, ge=1)
    max_wait_seconds: int = Field(default=30, ge=0)
    max_subscriptions_per_connection: int = Field(default=20, ge=1)
    max_subscriptions_per_tenant: int = Field(default=200, ge=1)

    # Tenancy and abuse protection (issue 5). PLANS: JSON {name: {limit: value}}; a tenant's plan
    # column picks one (unknown names get DEFAULT_PLAN) and its `limits` column overrides single values.
    plans: dict[str, dict[str, int]] = Field(default_factory=lambda: copy.deepcopy(DEFAULT_PLANS))
    default_plan: str = "free"
    rate_limits_enabled: bool = True
    job_defer_seconds: float = Field(default=2.0, ge=0)
    """How long a job waits before another try when its tenant already runs its max_running jobs."""
    key_last_used_resolution_seconds: int = Field(default=60, ge=1)
    """API keys' last-used time is recorded (in Redis, flushed by the scheduler) at most this often."""
    key_recheck_seconds: float = Field(default=5.0, gt=0)
    """A WebSocket's API key is checked again this often: at most this long after its revocation,
    the socket runs no further operation and is closed (4403)."""

    @model_validator(mode="after")
    def _check_plans(self) -> Settings:
        if self.default_plan not in self.plans:
            raise ValueError(f"DEFAULT_PLAN {self.default_plan!r} is not one of PLANS {sorted(self.plans)}")
        for name, plan in self.plans.items():
            missing = missing_limits(plan)
            if missing or any(value < 0 for value in plan.values()):
                raise ValueError(
                    f"plan {name!r} needs every limit of {REQUIRED_LIMITS} (>= 0); missing {missing}"
                )
        return self

    # Fernet keys (comma-separated, newest first) for secrets at rest; default: derived from SECRET_KEY.
    encryption_keys: str = ""

    # Webhooks. Delays are seconds after the previous attempt; the scale compresses them (tests, chaos).
    webhook_retry_schedule: list[float] = [0, 5, 300, 1800, 7200, 18000, 36000, 36000]
    webhook_retry_scale: float = Field(default=1.0, gt=0)
    webhook_retry_jitter: float = Field(default=0.2, ge=0, lt=1)
    webhook_max_retry_after: float = Field(default=3600, ge=0)
    webhook_timeout_seconds: float = Field(default=15, gt=0)
    webhook_disable_after_seconds: float = Field(default=5 * 24 * 3600, gt=0)
    webhook_allowed_cidrs: str = ""
    webhook_allow_http: bool = False
    webhook_max_in_flight: int = Field(default=200, ge=1)
    webhook_max_in_flight_per_endpoint: int = Field(default=20, ge=1)
    webhook_poll_seconds: float = Field(default=1.0, gt=0)

    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    """Where a worker serves its Prometheus scrape (unset: not served)."""

    @model_validator(mode="after")
    def _refuse_default_secret(self) -> Settings:
        if self.environment == "production" and self.secret_key == DEV_SECRET_KEY:
            raise ValueError("SECRET_KEY must be set to a random value outside development")
        if len(self.secret_key) < 16:
            raise ValueError("SECRET_KEY must be at least 16 characters")
        return self

    @property
    def webhook_allowed_networks(self) -> list[str]:
        """WEBHOOK_ALLOWED_CIDRS as a list."""
        return [cidr.strip() for cidr in self.webhook_allowed_cidrs.split(",") if cidr.strip()]

    @property
    def artifacts_dir(self) -> Path:
        """Where the local storage backend keeps files."""
        return self.storage_dir or self.data_dir / "artifacts"


def dev_state_path(data_dir: Path) -> Path:
    """The file a running `claimcheck dev` writes its embedded servers' URLs to."""
    return data_dir / DEV_STATE_FILE


def read_dev_state(data_dir: Path) -> dict[str, str]:
    """The URLs and secret of the `claimcheck dev` running in data_dir, if any."""
    path = dev_state_path(data_dir)
    if not path.exists():
        return {}
    loaded: dict[str, str] = json.loads(path.read_text())
    return loaded


def load_settings(data_dir: Path | None = None) -> Settings:
    """Settings from the environment; what it leaves unset comes from a running `claimcheck dev`."""
    data_dir = data_dir or Path(os.environ.get("DATA_DIR", ".data"))
    state = read_dev_state(data_dir)
    overrides: dict[str, Any] = {"data_dir": data_dir}
    for name in ("database_url", "redis_url", "secret_key", "environment"):
        if name.upper() not in os.environ and state.get(name):
            overrides[name] = state[name]
    return Settings(**overrides)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings."""
    return load_settings()
