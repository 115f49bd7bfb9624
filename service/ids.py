"""Opaque, prefixed, time-sortable identifiers such as ``job_01JD7Z...`` (ULID body)."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, index = divmod(value, 32)
        chars.append(_ALPHABET[index])
    return "".join(reversed(chars))


_RANDOMNESS_LIMIT = 1 << 80
_lock = threading.Lock()
_last = (0, 0)  # the millisecond and randomness of this process's newest id


def new_id(prefix: str) -> str:
    """A new id: prefix, underscore, 10 chars of millisecond time, 16 chars of randomness.

    Monotonic in a process (as ULID's monotonic mode): an id made in the same millisecond as the one
    before it takes that one's randomness plus one, so the ids of one transaction (a job's progress
    and its success, made microseconds apart) sort in the order they were made. A forked child draws
    fresh randomness, so it never continues its parent's sequence."""
    global _last
    millis = time.time_ns() // 1_000_000
    with _lock:
        last_millis, last_randomness = _last
        if millis <= last_millis:
            millis, randomness = last_millis, last_randomness + 1
            if randomness >= _RANDOMNESS_LIMIT:
                millis, randomness = millis + 1, int.from_bytes(os.urandom(10), "big")
        else:
            randomness = int.from_bytes(os.urandom(10), "big")
        _last = (millis, randomness)
    return f"{prefix}_{_encode(millis, 10)}{_encode(randomness, 16)}"


def _forget_last() -> None:
    global _last, _lock
    _last, _lock = (0, 0), threading.Lock()


os.register_at_fork(after_in_child=_forget_last)


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
