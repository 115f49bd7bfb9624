"""API key format and keyed hashing: ``ck_<prefix>_<secret>``; only prefix and HMAC are stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

KEY_SCHEME = "ck"


@dataclass(frozen=True)
class ParsedKey:
    prefix: str
    full: str


def generate_key() -> ParsedKey:
    """A new random key; the caller shows ``full`` once and stores only prefix and hash."""
    prefix = secrets.token_hex(4)
    return ParsedKey(prefix=prefix, full=f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(32)}")


def parse_key(raw: str) -> ParsedKey | None:
    """The key's parts, or None when it is not shaped like one of ours."""
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_SCHEME or len(parts[1]) != 8 or len(parts[2]) < 20:
        return None
    if any(c not in "0123456789abcdef" for c in parts[1]):
        return None
    return ParsedKey(prefix=parts[1], full=raw)


def hash_key(full_key: str, server_secret: str) -> str:
    """HMAC-SHA256 of the whole key under the server secret, hex."""
    return hmac.new(server_secret.encode(), full_key.encode(), hashlib.sha256).hexdigest()


def key_matches(full_key: str, stored_hash: str, server_secret: str) -> bool:
    """Constant-time comparison of a presented key with a stored hash."""
    return hmac.compare_digest(hash_key(full_key, server_secret), stored_hash)
