"""Opaque, prefixed, time-sortable identifiers such as ``job_01JD7Z...`` (ULID body)."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, index = divmod(value, 32)
        chars.append(_ALPHABET[index])
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """A new id: prefix, underscore, 10 chars of millisecond time, 16 chars of randomness."""
    millis = time.time_ns() // 1_000_000
    randomness = int.from_bytes(os.urandom(10), "big")
    return f"{prefix}_{_encode(millis, 10)}{_encode(randomness, 16)}"


def first_id_at(prefix: str, at: datetime) -> str:
    """The smallest id of this prefix made at or after `at`: ids compare as their creation times do."""
    millis = int(at.timestamp() * 1000)
    return f"{prefix}_{_encode(millis, 10)}{_ALPHABET[0] * 16}"


def id_time(value: str) -> datetime:
    """When an id was made (to the millisecond), from its first 10 characters after the prefix."""
    millis = 0
    for char in value.partition("_")[2][:10]:
        millis = millis * 32 + _ALPHABET.index(char)
    return datetime.fromtimestamp(millis / 1000, tz=UTC)


def has_prefix(value: str, prefix: str) -> bool:
    """True when value looks like an id of this prefix (cheap shape check, no lookup)."""
    body = value.removeprefix(f"{prefix}_")
    return body != value and len(body) == 26 and all(c in _ALPHABET for c in body)
