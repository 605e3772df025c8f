"""Worked examples of which records may run (``delivery.schedule``)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provisioner.delivery.schedule import BARRIER, NOTHING, Schedule


def keys(*names: str) -> frozenset[str]:
    return frozenset(names)


def test_different_volumes_run_at_once_and_one_volume_in_offset_order() -> None:
    schedule = Schedule(limit=8)
    schedule.offer(0, keys("id:a", "name:c/va"))
    schedule.offer(1, keys("id:b", "name:c/vb"))
    schedule.offer(2, keys("id:a"))  # a delete of a by id waits for the provision of a
    assert schedule.startable() == [0, 1]
    assert schedule.startable() == []
    schedule.finish(0)
    assert schedule.startable() == [2]


def test_a_name_and_an_id_of_the_same_volume_meet() -> None:
    schedule = Schedule(limit=8)
    schedule.offer(0, keys("id:x", "name:c/a"))  # provision x as a
    schedule.offer(1, keys("id:x", "name:c/b"))  # provision x as b: shares the id
    schedule.offer(2, keys("name:c/a"))  # delete by name a (its id unknown yet): shares the name
    assert schedule.startable() == [0]
    schedule.finish(0)
    assert schedule.startable() == [1, 2]


def test_a_later_request_overtakes_one_that_waits() -> None:
    schedule = Schedule(limit=8)
    schedule.offer(0, keys("id:a"))
    schedule.offer(1, keys("id:a"))
    schedule.offer(2, keys("id:b"))
    assert schedule.startable() == [0, 2]


def test_a_barrier_waits_for_everything_before_it_and_holds_everything_after() -> None:
    schedule = Schedule(limit=8)
    schedule.offer(0, keys("id:a"))
    schedule.offer(1, BARRIER)
    schedule.offer(2, keys("id:b"))
    schedule.offer(3, NOTHING)
    assert schedule.startable() == [0]
    schedule.finish(0)
    assert schedule.startable() == [1]
    assert schedule.startable() == []
    schedule.finish(1)
    assert schedule.startable() == [2, 3]


def test_records_without_keys_never_wait_for_volumes() -> None:
    schedule = Schedule(limit=8)
    schedule.offer(0, keys("id:a"))
    schedule.offer(1, NOTHING)  # a dead letter
    schedule.offer(2, keys("id:a"))
    assert schedule.startable() == [0, 1]


def test_at_most_limit_run_and_the_size_counts_waiting_ones() -> None:
    schedule = Schedule(limit=2)
    for offset in range(4):
        schedule.offer(offset, keys(f"id:{offset}"))
    assert schedule.startable() == [0, 1]
    assert schedule.size == 4 and schedule.running == [0, 1]
    schedule.finish(1)
    assert schedule.startable() == [2]


def test_misuse_is_refused() -> None:
    schedule = Schedule(limit=2)
    schedule.offer(5, NOTHING)
    with pytest.raises(ValueError, match="after"):
        schedule.offer(5, NOTHING)
    with pytest.raises(ValueError, match="without having started"):
        schedule.finish(5)
    with pytest.raises(ValueError, match="not pending"):
        schedule.finish(9)


@given(
    st.lists(st.one_of(st.none(), st.frozensets(st.sampled_from(["a", "b", "c"]), max_size=2)), max_size=12),
    st.randoms(use_true_random=False),
    st.integers(min_value=1, max_value=4),
)
def test_records_sharing_a_key_run_in_offset_order_and_barriers_alone(
    offered: list[frozenset[str] | None], rng: random.Random, limit: int
) -> None:
    schedule = Schedule(limit=limit)
    for offset, ks in enumerate(offered):
        schedule.offer(offset, ks)
    running: set[int] = set()
    finished: set[int] = set()
    while len(finished) < len(offered):
        for offset in schedule.startable():
            earlier = range(offset)
            ks = offered[offset]
            for before in earlier:
                other = offered[before]
                if ks is None or other is None or not ks.isdisjoint(other):
                    assert before in finished, f"{offset} started before {before} finished"
            running.add(offset)
        assert running, "nothing can start although records wait"
        assert len(running) <= limit
        if any(offered[o] is None for o in running):
            assert len(running) == 1, "a barrier ran beside another record"
        done = rng.choice(sorted(running))
        schedule.finish(done)
        running.discard(done)
        finished.add(done)
