"""Example webhook receiver: verify each delivery, act once per webhook-id, keep the events.

    WEBHOOK_SECRET=whsec_... python -m callbacks.examples.receiver    # POST /webhooks, GET /events

WEBHOOK_SECRET holds a `whsec_` secret or a `whpk_` public key (several, space- or comma-separated,
during a rotation). With REDIS_URL set, every receiver process shares one dedupe store in Redis;
without it, dedupe lives in this process. HOST and PORT say where to listen (default 127.0.0.1:8000).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from opentelemetry import propagate, trace
from redis import Redis

from callbacks import MalformedKeyError, WebhookVerificationError, verify
from callbacks.dedupe import Dedupe, InProgressError, MemoryDedupe, RedisDedupe
from callbacks.keys import decode_verifying_key

logger = logging.getLogger(__name__)


async def raw_body(request: Request) -> bytes:
    """The body exactly as sent: signatures cover these bytes, not a re-encoding of the JSON."""
    return await request.body()


def create_app(keys: Sequence[str], dedupe: Dedupe) -> FastAPI:
    """The receiver app; `keys` are checked here so a bad key fails at start-up, not per delivery."""
    if not keys:
        raise MalformedKeyError("no verifying key given")
    for key in keys:
        decode_verifying_key(key)
    app = FastAPI(title="Example webhook receiver")
    tracer = trace.get_tracer("claimcheck.example-receiver")
    events: list[dict[str, Any]] = []

    def handle(webhook_id: str, event: dict[str, Any]) -> None:
        """Your work goes here; it runs once per webhook-id. Raise to have the sender retry."""
        logger.info("event %s %s %s", webhook_id, event.get("type"), event.get("data"))
        events.append({"webhook_id": webhook_id, **event})

    @app.post("/webhooks")
    def receive(request: Request, body: Annotated[bytes, Depends(raw_body)]) -> JSONResponse:
        # Continue the sender's trace (its `traceparent`): the job's trace ends in this handler.
        with tracer.start_as_current_span(
            "webhook.receive", context=propagate.extract(dict(request.headers))
        ):
            return process(request, body)

    def process(request: Request, body: bytes) -> JSONResponse:
        try:
            event = verify(body, request.headers, keys)
        except WebhookVerificationError as error:
            logger.warning("refused a delivery: %s", error)
            return JSONResponse({"error": error.code, "message": str(error)}, status_code=400)
        webhook_id = request.headers["webhook-id"]
        try:
            with dedupe.claim(webhook_id) as first:
                if first:
                    handle(webhook_id, event)
        except InProgressError:
            return JSONResponse({"status": "in progress"}, status_code=409, headers={"retry-after": "5"})
        return JSONResponse({"status": "processed" if first else "duplicate"})

    @app.get("/events")
    def list_events() -> list[dict[str, Any]]:
        return events

    return app


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    keys = os.environ.get("WEBHOOK_SECRET", "").replace(",", " ").split()
    redis_url = os.environ.get("REDIS_URL")
    dedupe = RedisDedupe(Redis.from_url(redis_url)) if redis_url else MemoryDedupe()
    try:
        app = create_app(keys, dedupe)
    except MalformedKeyError as error:
        raise SystemExit(f"WEBHOOK_SECRET: {error}") from None
    uvicorn.run(app, host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "8000")))


if __name__ == "__main__":
    main()
