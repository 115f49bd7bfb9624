"""Standard Webhooks signatures: `v1` (HMAC-SHA256, `whsec_`) and `v1a` (ed25519, `whsk_`)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from callbacks.errors import MalformedKeyError
from callbacks.keys import (
    PRIVATE_KEY_PREFIX,
    PUBLIC_KEY_PREFIX,
    SECRET_PREFIX,
    b64encode,
    decode_private_key,
    decode_secret,
)

USER_AGENT = "Claimcheck-Webhooks/1.0"


def signed_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    """Return the bytes both schemes sign: `{id}.{timestamp}.{body}`."""
    return f"{msg_id}.{timestamp}.".encode() + body


def hmac_signature(secret: bytes, content: bytes) -> bytes:
    """Return the raw HMAC-SHA256 of `content` under `secret`."""
    return hmac.new(secret, content, hashlib.sha256).digest()


def sign(msg_id: str, timestamp: int, body: bytes, keys: str | Sequence[str]) -> str:
    """Return the `webhook-signature` value: one `v1,`/`v1a,` entry per key, space-separated."""
    keys = [keys] if isinstance(keys, str) else keys
    if not keys:
        raise ValueError("at least one signing key is needed")
    if not msg_id or any(c.isspace() for c in msg_id):
        raise ValueError("the message id must be non-empty and contain no whitespace")
    content = signed_content(msg_id, timestamp, body)
    return " ".join(_sign_one(key, content) for key in keys)


def build_headers(
    msg_id: str, timestamp: int, body: bytes, keys: str | Sequence[str], traceparent: str | None = None
) -> dict[str, str]:
    """Return the headers of one delivery attempt of `body`."""
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(msg_id, timestamp, body, keys),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
    if traceparent:
        headers["traceparent"] = traceparent
    return headers


def _sign_one(key: str, content: bytes) -> str:
    if key.startswith(SECRET_PREFIX):
        return "v1," + b64encode(hmac_signature(decode_secret(key), content))
    if key.startswith(PRIVATE_KEY_PREFIX):
        return "v1a," + b64encode(decode_private_key(key).sign(content))
    if key.startswith(PUBLIC_KEY_PREFIX):
        raise MalformedKeyError("a whpk_ public key cannot sign; sign with its whsk_ private key")
    raise MalformedKeyError(f"a signing key must start with {SECRET_PREFIX!r} or {PRIVATE_KEY_PREFIX!r}")
