"""The ``claimcheck`` CLI: operator commands (they reach the database) here, tenant commands (an API key
over HTTP) in service.tenant_cli.

Server settings and logging are imported once the command is known: a worker pauses the garbage
collector first (service/collector.py), and tenant commands never need them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service import collector, tenant_cli

SERVER_COMMANDS = ("api", "worker", "scheduler")


def cmd_dev(args: argparse.Namespace) -> int:
    from service.devserver import run_dev

    return run_dev(port=args.port, data_dir=Path(args.data_dir))


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from service.settings import ConfigurationError, get_settings

    if args.workers > 1 and get_settings().metrics_port is not None:
        raise ConfigurationError(
            f"METRICS_PORT is set, so the API runs one worker per process, not --workers {args.workers}"
            " (WEB_CONCURRENCY): metrics are per process and the port fits one. Run more API processes"
            " instead, each with its own METRICS_PORT or container."
        )
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        proxy_headers=True,
        ws_max_size=get_settings().max_request_bytes,  # a WebSocket message is a request too (1009 over)
        # Subscription results are small and the same for every subscriber: compressing each copy per
        # connection (permessage-deflate) cost more CPU than anything else in sending them.
        ws_per_message_deflate=False,
        log_level=get_settings().log_level.lower(),
        log_config=None,  # uvicorn's lines go through our (structured, redacting) logging
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from service.worker import run_worker

    run_worker(args.queues or None, burst=args.burst, concurrency=args.concurrency)
    return 0


def cmd_scheduler(_args: argparse.Namespace) -> int:
    from service.scheduler import run_scheduler

    run_scheduler()
    return 0


def cmd_migrate(_args: argparse.Namespace) -> int:
    from service.migrate import upgrade
    from service.settings import get_settings

    upgrade(get_settings().required_url("database_url"))
    print("database is at the latest schema")
    return 0


def cmd_tenants_create(args: argparse.Namespace) -> int:
    from service.db import session_scope
    from service.settings import get_settings
    from service.tenants.service import create_tenant

    settings = get_settings()
    with session_scope() as session:
        tenant, issued = create_tenant(session, args.name, server_secret=settings.secret_key)
    if args.json:
        print(json.dumps({"tenant_id": tenant.id, "api_key": issued.full_key, "key_id": issued.key.id}))
    else:
        print(f"tenant {tenant.id} ({tenant.name}) created")
        print(f"API key (shown once, store it now): {issued.full_key}")
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    from service.db import session_scope
    from service.settings import get_settings
    from service.tenants.service import create_key

    settings = get_settings()
    with session_scope() as session:
        issued = create_key(session, args.tenant, server_secret=settings.secret_key, scopes=args.scope)
    if args.json:
        print(json.dumps({"key_id": issued.key.id, "api_key": issued.full_key, "scopes": issued.key.scopes}))
    else:
        print(f"key {issued.key.id} with scopes {', '.join(issued.key.scopes)}")
        print(f"API key (shown once, store it now): {issued.full_key}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from service.db import session_scope
    from service.tenants.service import revoke_key

    with session_scope() as session:
        key = revoke_key(session, args.key_id)
    print(f"key {key.id} revoked")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from service.db import session_scope
    from service.tenants.service import flush_key_last_used, list_keys

    with session_scope() as session:
        flush_key_last_used(session)  # the uses Redis holds, so the list is current
    with session_scope() as session:
        keys = list_keys(session, args.tenant)
        rows: list[dict[str, Any]] = [
            {
                "key_id": key.id,
                "prefix": key.prefix,
                "scopes": key.scopes,
                "created_at": key.created_at.isoformat(),
                "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None,
                "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
            }
            for key in keys
        ]
    if args.json:
        print(json.dumps(rows))
    else:
        for row in rows:
            state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
            used = row["last_used_at"] or "never"
            scopes = ",".join(row["scopes"])
            print(f"{row['key_id']}  ck_{row['prefix']}_...  {scopes}  {state}  last used {used}")
    return 0


def cmd_portal_link(args: argparse.Namespace) -> int:
    from service.db import session_scope
    from service.settings import get_settings
    from service.tenants.service import OPERATOR, create_portal_link

    with session_scope() as session:
        issued = create_portal_link(
            session,
            args.tenant,
            created_by=OPERATOR,
            ttl_seconds=args.ttl,
            server_secret=get_settings().secret_key,
        )
    print(issued.url)  # alone on stdout, for scripts: `open "$(claimcheck portal-link --tenant ...)"`
    return 0


def cmd_jobs_dead_letter(args: argparse.Namespace) -> int:
    from service.db import session_scope
    from service.jobs.remediation import remediation
    from service.jobs.service import dead_letter

    with session_scope() as session:
        jobs = dead_letter(session, tenant_id=args.tenant, since=args.since, code=args.code, limit=args.limit)
        rows = [
            {
                "job_id": job.id,
                "tenant_id": job.tenant_id,
                "kind": job.kind,
                "priority": job.priority,
                "attempt": job.attempt,
                "error_code": job.error_code,
                "error_message": job.error_message,
                "remediation": remediation(job.error_code or ""),
                "dead_lettered_at": job.dead_lettered_at.isoformat() if job.dead_lettered_at else None,
            }
            for job in jobs
        ]
    if args.json:
        print(json.dumps(rows))
    else:
        for row in rows:
            print(
                f"{row['job_id']}  {row['tenant_id']}  {row['kind']}  attempt {row['attempt']}  "
                f"{row['error_code']}  {row['dead_lettered_at']}\n    {row['error_message']}\n"
                f"    → {row['remediation']}"
            )
        print(f"{len(rows)} dead-lettered job(s)")
    return 0


def cmd_jobs_requeue(args: argparse.Namespace) -> int:
    from service.db import session_scope
    from service.jobs.service import dead_letter, operator_requeue

    if bool(args.ids) == args.all_matching:
        print("error: give job ids, or --all-matching with filters (not both)", file=sys.stderr)
        return 2
    ids: list[str] = list(args.ids)
    if args.all_matching:
        with session_scope() as session:
            matching = dead_letter(
                session, tenant_id=args.tenant, since=args.since, code=args.code, limit=args.limit
            )
            ids = [job.id for job in matching]
    for job_id in ids:  # one transaction each: a job that cannot be requeued does not hold back the rest
        with session_scope() as session:
            job = operator_requeue(session, job_id)
            print(f"{job.id} requeued (next attempt {job.attempt + 1})")
    print(f"{len(ids)} job(s) requeued")
    return 0


def _timestamp(value: str) -> datetime:
    """An ISO 8601 time from the command line (UTC when it names no zone)."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from error
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def cmd_secrets_rotate(_args: argparse.Namespace) -> int:
    from service.db import session_scope
    from service.webhooks.service import reencrypt_all

    with session_scope() as session:
        count = reencrypt_all(session)
    print(f"{count} webhook endpoint(s) re-encrypted with the newest ENCRYPTION_KEYS key")
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        default=os.environ.get("DATA_DIR", ".data"),
        help="where `claimcheck dev` keeps its embedded servers (used when DATABASE_URL/REDIS_URL are unset)",
    )
    parser = argparse.ArgumentParser(
        prog="claimcheck",
        description="Claimcheck: operator commands (they reach the database) and tenant commands (an API key"
        " over HTTP: CLAIMCHECK_API_URL, CLAIMCHECK_API_KEY)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def command(group: Any, name: str, help: str) -> argparse.ArgumentParser:
        operator = help if help.startswith("operator command") else f"operator command: {help}"
        sub: argparse.ArgumentParser = group.add_parser(name, help=operator, parents=[common])
        return sub

    dev = command(commands, "dev", "run everything on this machine (embedded servers when no URLs)")
    dev.add_argument("--port", type=int, default=8000)
    dev.set_defaults(func=cmd_dev)

    api = command(commands, "api", "serve the GraphQL API and downloads")
    api.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))  # noqa: S104 - a server's job
    # String defaults go through `type` too: a bad PORT is argparse's clear error, not a traceback.
    api.add_argument("--port", type=int, default=os.environ.get("PORT", "8000"))
    api.add_argument("--workers", type=int, default=os.environ.get("WEB_CONCURRENCY", "1"))
    api.set_defaults(func=cmd_api)

    worker = command(commands, "worker", "run jobs from the queues")
    worker.add_argument("--queues", nargs="*", help="what to work on: jobs, webhooks (default: both)")
    worker.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    worker.add_argument(
        "--concurrency", type=int, help="work horses: jobs run at once (default WORKER_CONCURRENCY, 1)"
    )
    worker.set_defaults(func=cmd_worker)

    command(commands, "scheduler", "run the periodic sweeps").set_defaults(func=cmd_scheduler)
    command(commands, "migrate", "alembic upgrade head").set_defaults(func=cmd_migrate)

    tenants = commands.add_parser("tenants", help="tenant management").add_subparsers(
        dest="action", required=True
    )
    create = command(tenants, "create", "create a tenant and its first API key")
    create.add_argument("name")
    create.add_argument("--json", action="store_true")
    create.set_defaults(func=cmd_tenants_create)

    keys = commands.add_parser("keys", help="API key management").add_subparsers(dest="action", required=True)
    key_create = command(keys, "create", "create an API key for a tenant")
    key_create.add_argument("--tenant", required=True)
    key_create.add_argument(
        "--scope", action="append", help="jobs:read, jobs:write, webhooks:manage, portal (default: all)"
    )
    key_create.add_argument("--json", action="store_true")
    key_create.set_defaults(func=cmd_keys_create)
    key_revoke = command(keys, "revoke", "revoke an API key at once")
    key_revoke.add_argument("key_id")
    key_revoke.set_defaults(func=cmd_keys_revoke)
    key_list = command(keys, "list", "a tenant's API keys with their last use (never the keys themselves)")
    key_list.add_argument("--tenant", required=True)
    key_list.add_argument("--json", action="store_true")
    key_list.set_defaults(func=cmd_keys_list)

    portal_link = command(
        commands,
        "portal-link",
        "operator command: print a one-time sign-in link to a tenant's portal (valid 10 minutes by default)",
    )
    portal_link.add_argument("--tenant", required=True)
    portal_link.add_argument(
        "--ttl", type=int, default=None, help="seconds the link stays usable (default 600)"
    )
    portal_link.set_defaults(func=cmd_portal_link)

    jobs = commands.add_parser(
        "jobs", help="jobs: tenant commands (speak, wait, download, ...) and the operator's dead letter"
    ).add_subparsers(dest="action", required=True)
    tenant_cli.add_job_commands(jobs)
    dead = command(jobs, "dead-letter", "list jobs that failed for good (retries spent or a permanent error)")
    requeue = command(jobs, "requeue", "send dead-lettered jobs back to the queue (same ids, next attempt)")
    requeue.add_argument("ids", nargs="*", metavar="ID", help="job ids to requeue")
    requeue.add_argument(
        "--all-matching", action="store_true", help="every dead-lettered job the filters match"
    )
    for sub in (dead, requeue):
        sub.add_argument("--tenant", help="only this tenant's jobs")
        sub.add_argument("--since", type=_timestamp, help="dead-lettered at or after this ISO 8601 time")
        sub.add_argument("--code", help="only jobs that failed with this error code")
        sub.add_argument("--limit", type=int, default=1000, help="at most this many (newest first)")
    dead.add_argument("--json", action="store_true")
    dead.set_defaults(func=cmd_jobs_dead_letter)
    requeue.set_defaults(func=cmd_jobs_requeue)

    secrets = commands.add_parser("secrets", help="secrets at rest").add_subparsers(
        dest="action", required=True
    )
    command(
        secrets,
        "rotate",
        "re-encrypt webhook secrets with the first ENCRYPTION_KEYS key (then drop old keys)",
    ).set_defaults(func=cmd_secrets_rotate)

    webhooks = commands.add_parser("webhooks", help="webhooks (tenant commands)").add_subparsers(
        dest="action", required=True
    )
    tenant_cli.add_webhook_commands(webhooks)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``claimcheck`` console script."""
    args = build_parser().parse_args(argv)
    if getattr(args, "tenant_command", False):
        return int(args.func(args))  # the API's client: no server settings, its own exit codes
    if args.command == "worker":
        collector.pause()  # until it forks its first work horse (service/worker.py)
    os.environ["DATA_DIR"] = args.data_dir
    from observability.logging import setup_logging
    from service.errors import ClaimcheckError
    from service.settings import get_settings

    try:
        # Every setting is checked before anything starts (`dev` makes its SECRET_KEY first; each of
        # its processes then checks its own).
        if args.command == "dev":
            setup_logging(os.environ.get("LOG_LEVEL", "INFO"))
        else:
            settings = get_settings()
            if args.command in SERVER_COMMANDS:
                settings.required_url("database_url")
                settings.required_url("redis_url")
            setup_logging(settings.log_level)  # JSON lines in production, text in development
        return int(args.func(args))
    except ClaimcheckError as error:
        print(f"error ({error.code}): {error.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
