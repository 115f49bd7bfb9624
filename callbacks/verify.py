"""Verify a Standard Webhooks delivery: headers present, timestamp fresh, a signature matching a key."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from callbacks.errors import (
    FutureTimestampError,
    InvalidPayloadError,
    InvalidTimestampError,
    MalformedHeaderError,
    MalformedKeyError,
    MissingHeaderError,
    NoMatchingSignatureError,
    StaleTimestampError,
)
from callbacks.keys import decode_verifying_key
from callbacks.signing import hmac_signature, signed_content

DEFAULT_TOLERANCE = 300
# Bounds on what is parsed, so a hostile request costs little: no sender needs more. A `v1a`
# entry is 92 characters; 16 of them cover any rotation.
MAX_ID_LENGTH = 256
MAX_TIMESTAMP_LENGTH = 16
MAX_SIGNATURES = 16
MAX_SIGNATURE_HEADER_LENGTH = 4096
_ID_CHARACTERS = frozenset(chr(code) for code in range(0x21, 0x7F))  # printable ASCII, no space


def verify(
    body: bytes,
    headers: Mapping[str, str],
    secret_or_public_key: str | Sequence[str],
    tolerance: int = DEFAULT_TOLERANCE,
) -> dict[str, Any]:
    """Verify one delivery and return its JSON payload, or raise a `WebhookVerificationError`.

    `body` is the raw request body, `headers` its headers (any case). `secret_or_public_key` is a
    `whsec_` secret (checks `v1` signatures), a `whpk_` public key (checks `v1a`), or several of
    them during a rotation; one matching signature suffices. A timestamp more than `tolerance`
    seconds in the past or future is refused, as a replay or a bad clock. Headers longer than the
    bounds below, or with more than `MAX_SIGNATURES` signatures, are refused unparsed.
    """
    keys = [secret_or_public_key] if isinstance(secret_or_public_key, str) else secret_or_public_key
    if not keys:
        raise MalformedKeyError("no verifying key given")
    decoded = [decode_verifying_key(key) for key in keys]

    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = _header(lowered, "webhook-id", MAX_ID_LENGTH)
    if not _ID_CHARACTERS.issuperset(msg_id):
        raise MalformedHeaderError("webhook-id", "must be printable ASCII without spaces")
    timestamp = _check_timestamp(_header(lowered, "webhook-timestamp"), tolerance)
    signatures = _parse_signatures(_header(lowered, "webhook-signature", MAX_SIGNATURE_HEADER_LENGTH))
    content = signed_content(msg_id, timestamp, body)
    if not any(_matches(key, content, signatures) for key in decoded):
        raise NoMatchingSignatureError("no signature in webhook-signature matches the key(s) given")

    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        raise InvalidPayloadError("the body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise InvalidPayloadError("the body is not a JSON object")
    return payload


def _header(headers: Mapping[str, str], name: str, max_length: int | None = None) -> str:
    value = headers.get(name, "").strip()
    if not value:
        raise MissingHeaderError(name)
    if max_length is not None and len(value) > max_length:
        raise MalformedHeaderError(name, f"is longer than {max_length} characters")
    return value


def _check_timestamp(value: str, tolerance: int) -> int:
    if not (len(value) <= MAX_TIMESTAMP_LENGTH and value.isascii() and value.isdigit()):
        raise InvalidTimestampError(f"webhook-timestamp must be Unix seconds, got {value[:32]!r}")
    timestamp = int(value)
    now = int(time.time())
    if timestamp < now - tolerance:
        raise StaleTimestampError(f"webhook-timestamp is {now - timestamp} s old (tolerance {tolerance} s)")
    if timestamp > now + tolerance:
        raise FutureTimestampError(
            f"webhook-timestamp is {timestamp - now} s in the future (tolerance {tolerance} s)"
        )
    return timestamp


def _parse_signatures(header: str) -> list[tuple[str, bytes]]:
    """(version, raw signature) for each well-formed `version,base64` entry; others are skipped."""
    entries = header.split()
    if len(entries) > MAX_SIGNATURES:
        raise MalformedHeaderError("webhook-signature", f"has more than {MAX_SIGNATURES} signatures")
    parsed = []
    for entry in entries:
        version, _, encoded = entry.partition(",")
        if not encoded.isascii():
            continue
        try:
            parsed.append((version, base64.b64decode(encoded, validate=True)))
        except binascii.Error:
            continue
    return parsed


def _matches(key: bytes | Ed25519PublicKey, content: bytes, signatures: list[tuple[str, bytes]]) -> bool:
    if isinstance(key, bytes):
        expected = hmac_signature(key, content)
        return any(version == "v1" and hmac.compare_digest(expected, sig) for version, sig in signatures)
    return any(version == "v1a" and _ed25519_valid(key, sig, content) for version, sig in signatures)


def _ed25519_valid(key: Ed25519PublicKey, signature: bytes, content: bytes) -> bool:
    try:
        key.verify(signature, content)
    except InvalidSignature:
        return False
    return True
