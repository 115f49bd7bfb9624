"""Running a tenant command: the SDK client from the environment, its errors as exit codes, and Ctrl-C
while following a job (which keeps running) with how to resume."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from service.client.aio import AsyncClaimcheck
from service.client.errors import ClaimcheckError
from service.tenant_cli.output import INTERRUPTED, report_error


@dataclass
class Session:
    """What a running command is doing that an interrupt must mention: how to resume it."""

    resume: str | None = None


Action = Callable[[AsyncClaimcheck, argparse.Namespace, Session], Awaitable[int]]


def run(args: argparse.Namespace, action: Action) -> int:
    """Run the command's action with a client from CLAIMCHECK_API_URL / CLAIMCHECK_API_KEY."""
    session = Session()
    try:
        return asyncio.run(_with_client(args, action, session))
    except ClaimcheckError as error:
        return report_error(error, as_json=args.json)
    except KeyboardInterrupt:
        print(f"\n{session.resume or 'interrupted'}", file=sys.stderr)
        return INTERRUPTED


async def _with_client(args: argparse.Namespace, action: Action, session: Session) -> int:
    async with AsyncClaimcheck.from_env() as client:
        return await action(client, args, session)
