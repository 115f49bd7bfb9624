"""Recent successes and failures per key (a tenant id), over a sliding window, with the top few.

A gauge built on it stays bounded however many tenants there are: it reports only the ``top(n)``.
Thread-safe: the deliverer's loop adds while the metrics server's thread reads.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable


class RecentOutcomes:
    """Counts per key over the last ``window_seconds``, kept in slices of ``slice_seconds``."""

    def __init__(
        self,
        window_seconds: float,
        *,
        slice_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._slice = slice_seconds
        self._slices_kept = max(1, round(window_seconds / slice_seconds))
        self._clock = clock
        self._lock = threading.Lock()
        # (slice number, attempts by key, failures by key), oldest first
        self._slices: deque[tuple[int, Counter[str], Counter[str]]] = deque()

    def add(self, key: str, *, failed: bool) -> None:
        """One outcome for ``key``."""
        with self._lock:
            current = self._current()
            if not self._slices or self._slices[-1][0] != current:
                self._slices.append((current, Counter(), Counter()))
            _, attempts, failures = self._slices[-1]
            attempts[key] += 1
            if failed:
                failures[key] += 1

    def top(self, n: int) -> list[tuple[str, int, int]]:
        """Up to ``n`` (key, attempts, failures) in the window: most failures first, then most attempts."""
        with self._lock:
            self._current()
            attempts: Counter[str] = Counter()
            failures: Counter[str] = Counter()
            for _, slice_attempts, slice_failures in self._slices:
                attempts.update(slice_attempts)
                failures.update(slice_failures)
        ranked = sorted(attempts, key=lambda key: (-failures[key], -attempts[key], key))
        return [(key, attempts[key], failures[key]) for key in ranked[:n]]

    def _current(self) -> int:
        """The current slice's number, after dropping the slices that left the window."""
        current = int(self._clock() // self._slice)
        while self._slices and self._slices[0][0] <= current - self._slices_kept:
            self._slices.popleft()
        return current
