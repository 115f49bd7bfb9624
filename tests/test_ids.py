"""Ids: time-sortable, and in the order they were made within a process (a forked child does not
continue its parent's sequence)."""

from __future__ import annotations

import os

from service.ids import has_prefix, id_time, new_id


def test_ids_made_in_a_row_sort_in_the_order_they_were_made() -> None:
    ids = [new_id("evt") for _ in range(5_000)]  # many share a millisecond
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(has_prefix(value, "evt") for value in ids)
    assert len({id_time(value) for value in ids}) < len(ids)


def test_a_forked_child_draws_fresh_randomness() -> None:
    parent_last = new_id("evt")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, written to the pipe
        os.write(write, new_id("evt").encode())
        os._exit(0)
    os.close(write)
    child_id = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    parent_next = new_id("evt")
    # Had the child continued the parent's sequence, its id would be the parent's next one.
    assert child_id != parent_next
    assert child_id[4:14] >= parent_last[4:14]  # still time-sortable
