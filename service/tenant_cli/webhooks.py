"""`claimcheck webhooks ...`: `listen` streams the tenant's events (the webhookEvents subscription) and
POSTs each to a local URL signed as the service signs its webhooks; `trigger` sends a sample event."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime

import httpx

from callbacks.errors import MalformedKeyError
from callbacks.keys import decode_secret, generate_secret
from callbacks.signing import build_headers
from service.client.aio import AsyncClaimcheck
from service.client.errors import ClaimcheckError, ValidationError
from service.tenant_cli.output import OK
from service.tenant_cli.session import Session, run

FORWARD_TIMEOUT_SECONDS = 10.0


def listen(args: argparse.Namespace) -> int:
    return run(args, _listen)


async def _listen(client: AsyncClaimcheck, args: argparse.Namespace, session: Session) -> int:
    secret = args.secret or generate_secret()
    try:
        decode_secret(secret)
    except MalformedKeyError as error:
        raise ValidationError(f"--secret: {error}", field=["secret"]) from error
    types = [name.strip() for name in (args.events or "").split(",") if name.strip()] or None
    print(json.dumps({"secret": secret}) if args.json else f"secret: {secret}", flush=True)
    print(
        f"forwarding {', '.join(types) if types else 'every'} event type to {args.forward_to}"
        " (Ctrl-C to stop)",
        file=sys.stderr,
        flush=True,
    )

    def reconnecting(error: ClaimcheckError, delay: float) -> None:
        print(f"connection lost ({error}); reconnecting in {delay:g} s", file=sys.stderr, flush=True)

    async with httpx.AsyncClient(timeout=FORWARD_TIMEOUT_SECONDS, follow_redirects=False) as http:
        async for event in client.webhook_event_stream(types, args.after, on_reconnect=reconnecting):
            body = event.body.encode()
            headers = build_headers(event.id, int(time.time()), body, secret)
            started = time.monotonic()
            status: int | None = None
            problem: str | None = None
            try:
                status = (await http.post(args.forward_to, content=body, headers=headers)).status_code
            except httpx.HTTPError as failure:
                problem = str(failure) or type(failure).__name__
            millis = round((time.monotonic() - started) * 1000)
            at = datetime.now(UTC)
            session.resume = (
                f"stopped listening. Resume after the last event: claimcheck webhooks listen"
                f" --forward-to {args.forward_to} --secret {secret} --after {event.id}"
                + (f" --events {args.events}" if args.events else "")
            )
            if args.json:
                line = {"at": at.isoformat(), "type": event.type_, "id": event.id, "status": status}
                print(json.dumps({**line, "ms": millis, "error": problem}), flush=True)
            else:
                outcome = str(status) if status is not None else f"error: {problem}"
                print(f"{at:%H:%M:%S}  {event.type_:<17} {event.id}  {outcome}  {millis} ms", flush=True)
    return OK


def trigger(args: argparse.Namespace) -> int:
    return run(args, _trigger)


async def _trigger(client: AsyncClaimcheck, args: argparse.Namespace, _session: Session) -> int:
    sent = (await client.trigger_webhook_event(args.type)).trigger_webhook_event
    if args.json:
        print(json.dumps({"type": args.type, "id": sent.event_id, "endpoints": sent.endpoint_count}))
    elif sent.event_id is None:
        print(f"no endpoint wants {args.type} events and no listener is running: nothing was sent")
    else:
        print(
            f"{args.type} {sent.event_id} sent to {sent.endpoint_count} endpoint(s) and any running listener"
        )
    return OK
