"""Desired state: the canonical values its volumes share are kept exactly as long as some volume holds them."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from provisioner.domain import (
    Brick,
    BrickId,
    ClusterId,
    DeviceId,
    Distribute,
    NodeId,
    Replicate,
    Volume,
    VolumeId,
    VolumeStatus,
)
from provisioner.state import DesiredState, StateChange


def hexid(n: int) -> str:
    return f"{n:032x}"


def volume(n: int, size: int, *, replica: int, status: VolumeStatus = VolumeStatus.ONLINE) -> Volume:
    bricks = tuple(
        Brick(id=BrickId(hexid(1000 * n + i)), node=NodeId(f"n{i}"), device=DeviceId(f"d{i}"), size=size, set_index=0)
        for i in range(replica)
    )
    return Volume(
        id=VolumeId(hexid(n)),
        name=f"vol_{n}",
        cluster=ClusterId("c1"),
        size=size,
        durability=Replicate(replica=replica) if replica > 1 else Distribute(),
        bricks=bricks,
        status=status,
    )


def held_values(state: DesiredState) -> int:
    """What the volumes in state hold between them, counted distinct, as ``_compact`` shares them."""
    values: set[object] = set()
    for v in state.volumes.values():
        values.update((v.cluster, v.size, v.durability))
        for b in v.bricks:
            values.update((b.node, b.device, b.size))
    return len(values)


operations = st.lists(
    st.tuples(
        st.sampled_from(["put", "status", "delete"]),
        st.integers(0, 7),  # which volume
        st.integers(1, 40).map(lambda g: g * 2**30),  # its size
        st.integers(1, 3),  # its replica count
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(operations)
def test_shared_values_follow_the_volumes_that_hold_them(steps: list[tuple[str, int, int, int]]) -> None:
    state = DesiredState()
    for op, n, size, replica in steps:
        if op == "delete":
            state.apply(StateChange.delete_volume(VolumeId(hexid(n))))
        elif op == "status" and (old := state.volumes.get(VolumeId(hexid(n)))) is not None:
            state.apply(StateChange.put_volume(replace(old, status=VolumeStatus.CREATING)))
        else:
            state.apply(StateChange.put_volume(volume(n, size, replica=replica)))
        assert state.shared_values == held_values(state)
    for volume_id in list(state.volumes):
        state.apply(StateChange.delete_volume(volume_id))
    assert state.shared_values == 0


def test_a_stream_of_distinct_sizes_leaves_nothing_behind() -> None:
    state = DesiredState()
    for n in range(1, 2001):
        state.apply(StateChange.put_volume(volume(n, n * 2**30, replica=3)))
        state.apply(StateChange.delete_volume(VolumeId(hexid(n))))
    assert state.shared_values == 0


def test_volumes_share_one_copy_of_equal_values() -> None:
    state = DesiredState()
    for n in (1, 2):
        state.apply(StateChange.put_volume(volume(n, 5 * 2**40, replica=3)))
    first, second = state.volumes[VolumeId(hexid(1))], state.volumes[VolumeId(hexid(2))]
    assert first.size is second.size
    assert first.bricks[0].node is second.bricks[0].node
