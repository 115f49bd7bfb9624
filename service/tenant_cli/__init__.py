"""The tenant commands of the `claimcheck` script: jobs and webhooks through the API with an API key
(CLAIMCHECK_API_URL, CLAIMCHECK_API_KEY), never the database. Only the parsers live here; a command's
module (and the SDK) is imported when it runs, so operator commands start as fast as before.

Exit codes: 0 succeeded, 1 the job failed or was canceled (or the API refused: not found, invalid
state, unreachable), 2 bad usage (argparse, VALIDATION), 3 the key (missing, refused, or lacking a
scope), 130 interrupted (a job keeps running).
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

TENANT = "tenant command (API key: CLAIMCHECK_API_URL, CLAIMCHECK_API_KEY)"
EPILOG = (
    "Exit codes: 0 succeeded; 1 the job failed or was canceled, or the API refused the request; 2 bad"
    " usage; 3 the API key is missing, refused or lacks a scope; 130 interrupted (the job keeps running)."
)


def _run(module: str, name: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        command = getattr(importlib.import_module(f"service.tenant_cli.{module}"), name)
        return int(command(args))

    return run


def _command(group: Any, name: str, help: str, module: str, function: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = group.add_parser(
        name,
        help=f"{TENANT}: {help}",
        description=f"{help[0].upper()}{help[1:]}. {TENANT.capitalize()}.",
        epilog=EPILOG,
    )
    parser.add_argument("--json", action="store_true", help="print JSON (one document, or a line per event)")
    parser.set_defaults(func=_run(module, function), tenant_command=True)
    return parser


def add_job_commands(jobs: Any) -> None:
    """`claimcheck jobs ...`: speak, list, get, wait, cancel, delete, download."""
    speak = _command(jobs, "speak", "start a speech job and print its id", "jobs", "speak")
    speak.add_argument("text")
    speak.add_argument("--voice", help="en-us (default), en-gb, de, fr, es, ...")
    speak.add_argument("--idempotency-key", help="the same key and text return the same job")
    speak.add_argument(
        "--wait", action="store_true", help="follow it until it ends (exit 0 only if it succeeded)"
    )
    speak.add_argument("--output", "-o", help="download the file here once it succeeded (implies --wait)")

    listing = _command(jobs, "list", "the newest jobs", "jobs", "list_jobs")
    listing.add_argument("--status", action="append", type=str.upper, help="only this status (repeatable)")
    listing.add_argument("--kind")
    listing.add_argument("--first", type=int, default=20, help="how many (default 20)")

    get = _command(jobs, "get", "a job with its error and file", "jobs", "get")
    get.add_argument("id")

    wait = _command(jobs, "wait", "follow a job until it ends (exit 0 only if it succeeded)", "jobs", "wait")
    wait.add_argument("id")
    wait.add_argument("--output", "-o", help="download the file here once it succeeded")

    cancel = _command(jobs, "cancel", "cancel a queued or running job", "jobs", "cancel")
    cancel.add_argument("id")

    delete = _command(jobs, "delete", "delete a finished job and its file", "jobs", "delete")
    delete.add_argument("id")

    download = _command(
        jobs, "download", "download a job's file, checked against its sha256", "jobs", "download"
    )
    download.add_argument("id")
    download.add_argument("--output", "-o", help="where (default: the file's name, here)")


def add_webhook_commands(webhooks: Any) -> None:
    """`claimcheck webhooks ...`: listen, trigger."""
    listen = _command(
        webhooks,
        "listen",
        "stream the tenant's webhook events and POST each, signed, to a local URL",
        "webhooks",
        "listen",
    )
    listen.add_argument("--forward-to", required=True, help="the URL to POST each event to")
    listen.add_argument("--events", help="only these event types, comma-separated (default: all)")
    listen.add_argument("--secret", help="sign with this whsec_ secret (default: a new one, printed first)")
    listen.add_argument("--after", help="resume after this event id (evt_...) without missing any")

    trigger = _command(
        webhooks,
        "trigger",
        "send a sample event of a type to the tenant's endpoints and running listeners",
        "webhooks",
        "trigger",
    )
    trigger.add_argument("type", help="an event type, e.g. job.succeeded")
