"""The sliding window behind the per-tenant webhook gauge: bounded to the top few, forgetting the old."""

from __future__ import annotations

from observability.recent import RecentOutcomes


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_top_keys_are_those_with_the_most_failures_then_the_most_attempts() -> None:
    recent = RecentOutcomes(300, clock=Clock())
    for key, attempts, failures in (("quiet", 50, 0), ("flaky", 10, 4), ("down", 6, 6), ("busy", 80, 0)):
        for number in range(attempts):
            recent.add(key, failed=number < failures)
    assert recent.top(3) == [("down", 6, 6), ("flaky", 10, 4), ("busy", 80, 0)]
    assert recent.top(10)[-1] == ("quiet", 50, 0)


def test_outcomes_older_than_the_window_are_forgotten() -> None:
    clock = Clock()
    recent = RecentOutcomes(60, slice_seconds=10, clock=clock)
    recent.add("ten_a", failed=True)
    clock.now += 30
    recent.add("ten_a", failed=False)
    recent.add("ten_b", failed=True)
    assert sorted(recent.top(5)) == [("ten_a", 2, 1), ("ten_b", 1, 1)]
    clock.now += 40  # the first outcome is 70 s old now
    assert sorted(recent.top(5)) == [("ten_a", 1, 0), ("ten_b", 1, 1)]
    clock.now += 60
    assert recent.top(5) == []
