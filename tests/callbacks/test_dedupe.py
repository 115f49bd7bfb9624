"""Dedupe by webhook-id in memory and in a real Redis: once per id, released on failure, leases expire."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from redis import Redis

from callbacks.dedupe import DONE, Dedupe, InProgressError, MemoryDedupe, RedisDedupe

MakeDedupe = Callable[..., Dedupe]


@pytest.fixture(params=["memory", "redis"])
def make_dedupe(request: pytest.FixtureRequest) -> Iterator[MakeDedupe]:
    """Builds a dedupe of the parametrised kind; Redis ones get a prefix of their own."""
    if request.param == "memory":
        yield MemoryDedupe
        return
    client = Redis.from_url(request.getfixturevalue("redis_url"))
    yield lambda **options: RedisDedupe(client, prefix=f"test-{uuid.uuid4().hex}:", **options)
    client.close()


class Failure(Exception):
    pass


def test_an_id_is_handled_once(make_dedupe: MakeDedupe) -> None:
    dedupe = make_dedupe()
    handled = []
    for _ in range(3):
        with dedupe.claim("evt_1") as first:
            if first:
                handled.append("evt_1")
    with dedupe.claim("evt_2") as first:
        assert first
    assert handled == ["evt_1"]


def test_a_failed_handler_releases_the_claim_for_the_retry(make_dedupe: MakeDedupe) -> None:
    dedupe = make_dedupe()

    def handle_and_fail() -> None:
        with dedupe.claim("evt_1") as first:
            assert first
            raise Failure

    with pytest.raises(Failure):
        handle_and_fail()
    with dedupe.claim("evt_1") as first:
        assert first
    with dedupe.claim("evt_1") as first:
        assert not first


def test_a_claim_held_elsewhere_is_in_progress(make_dedupe: MakeDedupe) -> None:
    dedupe = make_dedupe()
    with dedupe.claim("evt_1") as first:
        assert first
        with pytest.raises(InProgressError) as caught, dedupe.claim("evt_1"):
            pass
        assert caught.value.webhook_id == "evt_1"
    with dedupe.claim("evt_1") as first:
        assert not first


def test_a_crashed_handlers_lease_expires(make_dedupe: MakeDedupe) -> None:
    dedupe = make_dedupe(lease=0.2)
    crashed = dedupe.claim("evt_1")
    assert crashed.__enter__()  # never exits, as if the process died
    with pytest.raises(InProgressError), dedupe.claim("evt_1"):
        pass
    time.sleep(0.3)
    with dedupe.claim("evt_1") as first:
        assert first
    crashed.__exit__(None, None, None)


def test_a_late_failure_does_not_release_a_newer_claim(make_dedupe: MakeDedupe) -> None:
    dedupe = make_dedupe(lease=0.2)
    newer = dedupe.claim("evt_1")

    def fail_after_the_lease() -> None:
        with dedupe.claim("evt_1") as slow:
            assert slow
            time.sleep(0.3)  # the lease runs out; another handler takes over
            assert newer.__enter__()
            raise Failure

    with pytest.raises(Failure):
        fail_after_the_lease()
    with pytest.raises(InProgressError), dedupe.claim("evt_1"):
        pass
    newer.__exit__(None, None, None)


def test_done_ids_are_forgotten_after_the_ttl(make_dedupe: MakeDedupe) -> None:
    dedupe = make_dedupe(ttl=0.2)
    with dedupe.claim("evt_1") as first:
        assert first
    with dedupe.claim("evt_1") as first:
        assert not first
    time.sleep(0.3)
    with dedupe.claim("evt_1") as first:
        assert first


def test_concurrent_deliveries_of_one_id_are_handled_once(make_dedupe: MakeDedupe) -> None:
    dedupe = make_dedupe()
    barrier = threading.Barrier(16)
    outcomes: list[str] = []

    def deliver() -> None:
        barrier.wait()
        try:
            with dedupe.claim("evt_1") as first:
                if first:
                    time.sleep(0.05)
                outcomes.append("handled" if first else "duplicate")
        except InProgressError:
            outcomes.append("in progress")

    threads = [threading.Thread(target=deliver) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("handled") == 1
    assert len(outcomes) == 16


def test_redis_keeps_claims_under_the_prefix_with_a_ttl(redis_url: str) -> None:
    client = Redis.from_url(redis_url, decode_responses=True)
    prefix = f"test-{uuid.uuid4().hex}:"
    dedupe = RedisDedupe(client, prefix=prefix, ttl=3600, lease=30)
    with dedupe.claim("evt_1") as first:
        assert first
        assert 0 < client.pttl(prefix + "evt_1") <= 30_000
    assert client.get(prefix + "evt_1") == DONE
    assert 30_000 < client.pttl(prefix + "evt_1") <= 3_600_000
    with dedupe.claim("evt_1") as first:  # a client that decodes responses works the same
        assert not first
    client.close()


def test_memory_dedupe_is_bounded_and_forgets_the_oldest() -> None:
    dedupe = MemoryDedupe(max_entries=3)
    for n in range(5):
        with dedupe.claim(f"evt_{n}"):
            pass
    assert len(dedupe) == 3
    with dedupe.claim("evt_4") as first:
        assert not first
    with dedupe.claim("evt_0") as first:
        assert first


def test_memory_dedupe_drops_expired_entries() -> None:
    clock = [0.0]
    dedupe = MemoryDedupe(ttl=10, clock=lambda: clock[0])
    for n in range(3):
        with dedupe.claim(f"evt_{n}"):
            pass
    clock[0] = 11
    with dedupe.claim("evt_new"):
        pass
    assert len(dedupe) == 1
