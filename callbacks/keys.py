"""Webhook key material: `whsec_` HMAC secrets and `whsk_`/`whpk_` ed25519 keypairs.

Every key is a prefix plus standard base64 of its raw bytes: an HMAC secret is 24-64 random bytes
(the HMAC key is the decoded bytes, as Standard Webhooks requires); an ed25519 private key is its
32-byte seed and a public key its 32 raw bytes.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from typing import NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from callbacks.errors import MalformedKeyError

SECRET_PREFIX = "whsec_"  # noqa: S105 - a key-format prefix, not a secret
PRIVATE_KEY_PREFIX = "whsk_"
PUBLIC_KEY_PREFIX = "whpk_"

MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
DEFAULT_SECRET_BYTES = 32
ED25519_KEY_BYTES = 32


class KeyPair(NamedTuple):
    """An ed25519 keypair as strings: the sender keeps `private_key`, receivers get `public_key`."""

    private_key: str
    public_key: str


def generate_secret(nbytes: int = DEFAULT_SECRET_BYTES) -> str:
    """Return a new `whsec_` HMAC secret of `nbytes` random bytes (24-64)."""
    if not MIN_SECRET_BYTES <= nbytes <= MAX_SECRET_BYTES:
        raise ValueError(f"secret length must be {MIN_SECRET_BYTES}-{MAX_SECRET_BYTES} bytes, got {nbytes}")
    return SECRET_PREFIX + b64encode(secrets.token_bytes(nbytes))


def generate_keypair() -> KeyPair:
    """Return a new ed25519 keypair as (`whsk_...`, `whpk_...`)."""
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return KeyPair(PRIVATE_KEY_PREFIX + b64encode(seed), encode_public_key(private.public_key()))


def decode_secret(secret: str) -> bytes:
    """Return the HMAC key bytes of a `whsec_` secret (24-64 bytes)."""
    raw = _decode(secret, SECRET_PREFIX, "secret")
    if not MIN_SECRET_BYTES <= len(raw) <= MAX_SECRET_BYTES:
        raise MalformedKeyError(
            f"a webhook secret must decode to {MIN_SECRET_BYTES}-{MAX_SECRET_BYTES} bytes, got {len(raw)}"
        )
    return raw


def decode_private_key(key: str) -> Ed25519PrivateKey:
    """Return the ed25519 private key of a `whsk_` string."""
    raw = _decode(key, PRIVATE_KEY_PREFIX, "private key", ED25519_KEY_BYTES)
    return Ed25519PrivateKey.from_private_bytes(raw)


def decode_public_key(key: str) -> Ed25519PublicKey:
    """Return the ed25519 public key of a `whpk_` string."""
    raw = _decode(key, PUBLIC_KEY_PREFIX, "public key", ED25519_KEY_BYTES)
    return Ed25519PublicKey.from_public_bytes(raw)


def decode_verifying_key(key: str) -> bytes | Ed25519PublicKey:
    """Return what verifies deliveries: HMAC key bytes for `whsec_`, an ed25519 public key for `whpk_`."""
    if key.startswith(SECRET_PREFIX):
        return decode_secret(key)
    if key.startswith(PUBLIC_KEY_PREFIX):
        return decode_public_key(key)
    if key.startswith(PRIVATE_KEY_PREFIX):
        raise MalformedKeyError("a whsk_ private key stays with the sender; verify with its whpk_ public key")
    raise MalformedKeyError(f"a verifying key must start with {SECRET_PREFIX!r} or {PUBLIC_KEY_PREFIX!r}")


def encode_public_key(key: Ed25519PublicKey) -> str:
    """Return the `whpk_` string of an ed25519 public key."""
    return PUBLIC_KEY_PREFIX + b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw))


def public_key_for(private_key: str) -> str:
    """Return the `whpk_` public key matching a `whsk_` private key."""
    return encode_public_key(decode_private_key(private_key).public_key())


def b64encode(raw: bytes) -> str:
    """Standard base64 with padding, as text."""
    return base64.b64encode(raw).decode("ascii")


def _decode(key: str, prefix: str, what: str, size: int | None = None) -> bytes:
    if not key.startswith(prefix):
        raise MalformedKeyError(f"a webhook {what} must start with {prefix!r}")
    body = key[len(prefix) :].strip()
    try:
        # Tolerate missing padding, as the reference library does.
        raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except binascii.Error:
        raise MalformedKeyError(f"the webhook {what} after {prefix!r} is not valid base64") from None
    if size is not None and len(raw) != size:
        raise MalformedKeyError(f"a webhook {what} must decode to {size} bytes, got {len(raw)}")
    return raw
