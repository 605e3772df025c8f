"""The gid pool (``watch.gids``): lowest free first, never a used one."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioner.errors import GidsExhausted, PermanentError
from provisioner.watch.gids import GidPool


def test_gid_pool_hands_out_the_lowest_free_gid() -> None:
    pool = GidPool([2000, 2001, 2003])
    assert pool.allocate(2000, 2010) == 2002
    assert pool.allocate(2000, 2010) == 2004
    assert 2002 in pool and 2004 in pool
    assert pool.allocate(1990, 1995) == 1990  # used gids outside the range do not matter


def test_gid_pool_marked_gids_are_skipped_and_released_ones_reused() -> None:
    pool = GidPool()
    pool.mark(5000)
    assert pool.allocate(5000, 5005) == 5001
    pool.release(5000)
    assert 5000 not in pool
    assert pool.allocate(5000, 5005) == 5000
    pool.release(4242)  # releasing a gid never handed out is harmless


def test_gid_pool_exhausted_names_the_range() -> None:
    pool = GidPool([3000, 3001])
    with pytest.raises(GidsExhausted, match=r"3000\.\.3001") as raised:
        pool.allocate(3000, 3001)
    assert raised.value.reason == "GidsExhausted"
    assert isinstance(raised.value, PermanentError)


@settings(max_examples=300)
@given(
    used=st.sets(st.integers(min_value=0, max_value=60)),
    low=st.integers(min_value=0, max_value=50),
    width=st.integers(min_value=0, max_value=20),
    count=st.integers(min_value=1, max_value=25),
)
def test_gid_pool_never_hands_out_a_used_gid(used: set[int], low: int, width: int, count: int) -> None:
    high = low + width
    pool = GidPool(used)
    free = sorted(set(range(low, high + 1)) - used)
    handed: list[int] = []
    for _ in range(count):
        try:
            handed.append(pool.allocate(low, high))
        except GidsExhausted:
            assert len(handed) == len(free), "exhausted while a gid was still free"
            break
    assert all(low <= gid <= high for gid in handed)
    assert not set(handed) & used
    assert len(set(handed)) == len(handed)
    assert handed == free[: len(handed)], "not the lowest free gids, in order"
