"""Configuration from the environment (pydantic-settings), validated once at start-up."""

from __future__ import annotations

import binascii
import copy
import importlib.util
import json
import logging
import os
import re
from functools import lru_cache
from ipaddress import ip_network
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from cryptography.fernet import Fernet
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError
from redis.connection import parse_url as parse_redis_url
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from service.errors import ClaimcheckError
from service.plans import DEFAULT_PLANS, REQUIRED_LIMITS, missing_limits

DEV_STATE_FILE = "dev.json"
MIN_SECRET_KEY_CHARS = 16
Fraction = Annotated[float, Field(gt=0, lt=1)]
RetrySchedule = Annotated[list[Annotated[float, Field(ge=0)]], Field(min_length=1)]


class ConfigurationError(ClaimcheckError):
    """A setting is missing or malformed: the process refuses to start, naming the variable."""

    code = "CONFIGURATION"


class Settings(BaseSettings):
    """Every setting is an environment variable of the same name (upper case)."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    environment: Literal["development", "production", "test"] = "production"
    database_url: str = ""
    database_direct_url: str = ""
    """A direct connection to Postgres for LISTEN, which a transaction pooler (PgBouncer) cannot carry,
    when DATABASE_URL names one; default: DATABASE_URL."""
    database_prepared_statements: bool | None = None
    """Whether psycopg prepares statements it runs often; default: yes, unless DATABASE_DIRECT_URL is
    set (DATABASE_URL is then a transaction pooler, which cannot carry them before PgBouncer 1.21)."""
    database_pool_size: int = Field(default=15, ge=1, le=1000)
    """Postgres connections each process keeps open and uses at most (they open as needed; a request
    waits for one when all are in use). Kept, not closed after a burst: opening a connection costs
    Postgres far more than the statements of a request."""
    redis_url: str = ""
    redis_sentinels: str = ""
    """Comma-separated host:port of Redis Sentinels; when set, Redis is the master they name (REDIS_URL,
    if also set, gives only its database number and credentials)."""
    redis_sentinel_master: str = "mymaster"
    data_dir: Path = Path(".data")

    # Required everywhere; `claimcheck dev` generates one in its data dir and hands it on.
    secret_key: str = Field(default="", validate_default=True)
    public_base_url: str = "http://127.0.0.1:8000"
    log_level: str = "INFO"  # read by observability.logging too, before the settings load
    log_format: Literal["json", "text"] | None = None
    # Where this process serves Prometheus's scrape (/metrics); unset: nowhere. Never the API's port.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)

    storage_backend: Literal["local", "gcs"] = "local"
    storage_dir: Path | None = None
    gcs_bucket: str = ""
    gcs_project: str = ""  # default: the credentials' project
    gcs_chunk_bytes: int = Field(default=16 * 1024 * 1024, ge=256 * 1024, multiple_of=256 * 1024)
    gcs_signer_email: str = ""  # IAM signBlob account when the credentials name none (or another one)
    gcs_retry_seconds: float = Field(default=120, gt=0)
    storage_emulator_host: str = ""  # Google's own variable: API calls and signed URLs go there

    max_request_bytes: int = Field(default=1_000_000, ge=1_000)
    """HTTP bodies and WebSocket messages over this are refused (413; the socket closed with 1009)."""
    max_query_bytes: int = Field(default=100_000, ge=1_000)
    """GraphQL documents over this (UTF-8) are refused before parsing (QUERY_TOO_LARGE)."""
    # The GraphiQL page at GET /graphql, and schema introspection: off unless enabled (`claimcheck dev`
    # turns both on); the schema is public in API.md, a production endpoint need not serve it.
    graphql_ide: bool = False
    graphql_introspection: bool = False
    download_url_default_expiry: int = Field(default=900, ge=1)
    download_url_max_expiry: int = Field(default=7 * 24 * 3600, ge=1)

    speech_max_chars: int = Field(default=5_000, ge=1)
    progress_milestones: list[Fraction] = [0.25, 0.5, 0.75]

    outbox_grace_seconds: float = Field(default=5.0, ge=0)
    scheduler_interval_seconds: float = Field(default=2.0, gt=0)

    # Jobs: extra kind modules to load, retries of transient failures, liveness of running jobs.
    kind_modules: list[str] = []
    job_retry_base_seconds: float = Field(default=5.0, ge=0)
    job_retry_max_seconds: float = Field(default=600.0, ge=0)
    job_heartbeat_seconds: float = Field(default=10.0, gt=0)
    job_stuck_after_seconds: float = Field(default=60.0, gt=0)
    job_kill_grace_seconds: float = Field(default=30.0, ge=0)
    """A job still running this long past its kind's limit (RQ's SIGALRM did not stop it) is killed
    with its work horse."""
    job_priority_starvation_every: int = Field(default=10, ge=0)
    """A work horse takes every this-many-th job lowest priority first (LOW still moves under a steady
    HIGH load; 0 or 1: strict priority order)."""
    job_deadline_min_seconds: float = Field(default=1.0, ge=0)
    job_deadline_max_seconds: float = Field(default=7 * 24 * 3600.0, gt=0)
    """A job's deadline must lie this far from its creation at least and at most."""
    worker_concurrency: int = Field(default=1, ge=1, le=256)
    """Work horses per worker process: jobs it runs at once."""
    worker_max_jobs_per_horse: int = Field(default=1000, ge=0)
    """A horse is replaced by a fresh one after this many jobs (0: never), bounding what a kind's
    library may leak."""
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
    """Counted across every API process, in Redis (service.subscription_caps)."""
    subscription_lease_seconds: float = Field(default=15, gt=0)
    """A dead API process's subscriptions stop counting against its tenants' caps after this."""

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
    """How long a process trusts an API key it read from Postgres (revocations and limit changes are
    also announced through Redis at once); a WebSocket's key is checked again this often, and at most
    this long after its revocation the socket runs no further operation and is closed (4403)."""

    trace_client_spans: bool = False
    """With tracing on, also a span for each SQL statement and Redis command made inside traced work;
    off: the request, enqueue, run, upload and webhook-attempt spans only (a mutation
    makes several times more client spans than these)."""
    # The tenant portal (/portal): how long a browser stays signed in, and where a job's trace id links.
    portal_session_seconds: int = Field(default=8 * 3600, ge=60, le=30 * 24 * 3600)
    trace_url_template: str = ""
    """A URL with {trace_id} in it (e.g. Jaeger's http://localhost:16686/trace/{trace_id}); empty: no link."""

    @model_validator(mode="after")
    def _check_plans(self) -> Settings:
        if self.default_plan not in self.plans:
            raise ValueError(f"DEFAULT_PLAN {self.default_plan!r} is not one of PLANS {sorted(self.plans)}")
        for name, plan in self.plans.items():
            missing = missing_limits(plan)
            if missing or any(value < 0 for value in plan.values()):
                raise ValueError(
                    f"PLANS: plan {name!r} needs every limit of {REQUIRED_LIMITS} (>= 0); missing {missing}"
                )
        return self

    # Fernet keys (comma-separated, newest first) for secrets at rest; default: derived from SECRET_KEY.
    encryption_keys: str = ""

    # Webhooks. Delays are seconds after the previous attempt; the scale compresses them (tests, chaos).
    webhook_retry_schedule: RetrySchedule = [0, 5, 300, 1800, 7200, 18000, 36000, 36000]
    webhook_retry_scale: float = Field(default=1.0, gt=0)
    webhook_retry_jitter: float = Field(default=0.2, ge=0, lt=1)
    webhook_max_retry_after: float = Field(default=3600, ge=0)
    webhook_timeout_seconds: float = Field(default=15, gt=0)
    webhook_disable_after_seconds: float = Field(default=5 * 24 * 3600, gt=0)
    webhook_failing_alert_seconds: list[Annotated[float, Field(gt=0)]] = [3600, 86400, 259200]
    webhook_retention_days: float = Field(default=30, ge=1)
    webhook_retention_batch: int = Field(default=1000, ge=1, le=10000)
    webhook_allowed_cidrs: str = ""
    webhook_allow_http: bool = False
    webhook_max_in_flight: int = Field(default=200, ge=1)
    webhook_max_in_flight_per_endpoint: int = Field(default=20, ge=1)
    webhook_poll_seconds: float = Field(default=1.0, gt=0)
    webhook_resolve_timeout_seconds: float = Field(default=5.0, gt=0)

    @field_validator("secret_key")
    @classmethod
    def _check_secret_key(cls, value: str) -> str:
        if not value:
            raise ValueError(
                "not set: give every process the same random value of 16+ characters (for example from"
                " `openssl rand -hex 32`); only `claimcheck dev` makes one itself"
            )
        if len(value) < MIN_SECRET_KEY_CHARS:
            raise ValueError(f"must be at least {MIN_SECRET_KEY_CHARS} characters")
        return value

    @field_validator("database_url", "database_direct_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if not value:
            return value  # a running `claimcheck dev` fills it in; commands needing it say so
        try:
            backend = make_url(value).get_backend_name()
        except ArgumentError:
            raise ValueError("is not a URL (postgresql://user:password@host:5432/name)") from None
        if backend != "postgresql":
            raise ValueError(f"must be a postgresql:// URL, not {backend}://")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        if not value:
            return value
        try:
            options = parse_redis_url(value)  # type: ignore[no-untyped-call]
        except ValueError as error:  # its messages never repeat the URL (it may hold a password)
            raise ValueError(f"is not a Redis URL: {error}") from None
        database = urlsplit(value).path.strip("/")
        if "path" not in options and database and not database.isdigit():
            raise ValueError(f"the database after the host must be a number, not {database!r}")
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _check_redis_sentinels(cls, value: str) -> str:
        for address in value.split(","):
            host, _, port = address.strip().rpartition(":")
            if address.strip() and not (host and port.isdigit() and 0 < int(port) < 65536):
                raise ValueError(f"{address.strip()!r} is not host:port")
        return value

    @field_validator("public_base_url")
    @classmethod
    def _check_public_base_url(cls, value: str) -> str:
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - parsing the port checks it
        except ValueError as error:
            raise ValueError(f"{value!r} is not a URL: {error}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} must be an http:// or https:// URL with a host")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError(f"{value!r} must have no query, fragment or credentials")
        return value

    @field_validator("trace_url_template")
    @classmethod
    def _check_trace_url_template(cls, value: str) -> str:
        if not value:
            return value
        if "{trace_id}" not in value:
            raise ValueError("must contain {trace_id}, where the job's trace id goes")
        parts = urlsplit(value.replace("{trace_id}", "0"))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        if value.upper() not in logging.getLevelNamesMapping():
            raise ValueError(f"{value!r} is not a level: DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return value.upper()

    @field_validator("encryption_keys")
    @classmethod
    def _check_encryption_keys(cls, value: str) -> str:
        keys = [key.strip() for key in value.split(",") if key.strip()]
        for number, key in enumerate(keys, start=1):
            try:
                Fernet(key)
            except (ValueError, binascii.Error):  # the message never repeats the key
                raise ValueError(
                    f"key {number} of {len(keys)} is not a Fernet key (32 url-safe base64-encoded bytes,"
                    " as `Fernet.generate_key()` makes)"
                ) from None
        return value

    @field_validator("webhook_allowed_cidrs")
    @classmethod
    def _check_allowed_cidrs(cls, value: str) -> str:
        for cidr in value.split(","):
            if cidr.strip():
                try:
                    ip_network(cidr.strip())
                except ValueError as error:
                    raise ValueError(f"{cidr.strip()!r} is not a network: {error}") from None
        return value

    @field_validator("kind_modules")
    @classmethod
    def _check_kind_modules(cls, value: list[str]) -> list[str]:
        for module in value:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                raise ValueError(f"no module named {module!r} can be imported")
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if self.storage_backend == "gcs" and not self.gcs_bucket:
            raise ValueError("GCS_BUCKET must be set when STORAGE_BACKEND is gcs")
        if self.download_url_default_expiry > self.download_url_max_expiry:
            raise ValueError("DOWNLOAD_URL_DEFAULT_EXPIRY must not exceed DOWNLOAD_URL_MAX_EXPIRY")
        if self.job_stuck_after_seconds <= self.job_heartbeat_seconds:
            raise ValueError(
                "JOB_STUCK_AFTER_SECONDS must exceed JOB_HEARTBEAT_SECONDS, or every running job looks lost"
            )
        return self

    def required_url(self, name: Literal["database_url", "redis_url"]) -> str:
        """DATABASE_URL or REDIS_URL; a ConfigurationError when neither it nor a running dev gives one
        (REDIS_URL may stay empty when REDIS_SENTINELS names Redis)."""
        value: str = getattr(self, name)
        if not value and not (name == "redis_url" and self.redis_sentinels):
            raise ConfigurationError(
                f"{name.upper()} is not set, and no `claimcheck dev` is running in DATA_DIR ({self.data_dir})"
            )
        return value

    @property
    def use_prepared_statements(self) -> bool:
        """DATABASE_PREPARED_STATEMENTS, else whether DATABASE_URL is a direct connection."""
        if self.database_prepared_statements is not None:
            return self.database_prepared_statements
        return not self.database_direct_url

    @property
    def listen_url(self) -> str:
        """Where LISTEN connects: DATABASE_DIRECT_URL, else DATABASE_URL."""
        return self.database_direct_url or self.required_url("database_url")

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """REDIS_SENTINELS as (host, port) pairs; empty when Redis is not watched by Sentinels."""
        pairs = [address.strip().rpartition(":") for address in self.redis_sentinels.split(",")]
        return [(host.strip("[]"), int(port)) for host, _, port in pairs if host]

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
    """Settings from the environment; what it leaves unset comes from a running `claimcheck dev`.

    Raises `ConfigurationError` naming each bad variable (never repeating a secret's value).
    """
    data_dir = data_dir or Path(os.environ.get("DATA_DIR", ".data"))
    state = read_dev_state(data_dir)
    overrides: dict[str, Any] = {"data_dir": data_dir}
    for name in ("database_url", "redis_url", "secret_key", "environment"):
        if name.upper() not in os.environ and state.get(name):
            overrides[name] = state[name]
    try:
        return Settings(**overrides)
    except ValidationError as error:
        problems = [_describe(problem) for problem in error.errors(include_input=False, include_url=False)]
        raise ConfigurationError("invalid settings: " + "; ".join(problems)) from None
    except SettingsError as error:  # a value that should be JSON is not
        field = re.search(r'field "(\w+)"', str(error))
        name = field.group(1).upper() if field else "a setting"
        raise ConfigurationError(f"invalid settings: {name}: not valid JSON") from None


def _describe(problem: Any) -> str:
    """`VARIABLE: what is wrong` for one pydantic error (a check of several variables names them)."""
    message = str(problem["msg"]).removeprefix("Value error, ")
    location = [str(part) for part in problem["loc"]]
    if not location:
        return message
    name = location[0].upper()
    return f"{name} ({'.'.join(location[1:])}): {message}" if location[1:] else f"{name}: {message}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings."""
    return load_settings()
