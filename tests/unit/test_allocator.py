"""Allocator invariants: table-driven cases and hypothesis over random topologies."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioner.domain import (
    Cluster,
    DeviceId,
    Disperse,
    Distribute,
    Durability,
    Replicate,
    VolumeId,
)
from provisioner.errors import NoCapacity
from provisioner.planning.allocator import Limits, PlacementRequest, ZoneChecking, plan_volume
from tests.fakes import cluster

GiB = 1024**3


REPLICA3 = Replicate()


def request(size: int, durability: Durability = REPLICA3, zones: ZoneChecking = ZoneChecking.NONE) -> PlacementRequest:
    return PlacementRequest(volume=VolumeId("ab" * 16), size=size, durability=durability, zone_checking=zones)


def test_replica_three_lands_on_three_nodes() -> None:
    plan = plan_volume(request(GiB), cluster((1, [10]), (1, [10]), (1, [10])), {})
    assert len(plan.bricks) == 3
    assert len({b.node for b in plan.bricks}) == 3
    assert all(b.size == GiB for b in plan.bricks)


def test_fewer_than_three_nodes_is_a_clear_error() -> None:
    with pytest.raises(NoCapacity) as failure:
        plan_volume(request(GiB), cluster((1, [10]), (1, [10])), {})
    assert failure.value.reason == "NotEnoughNodes"
    assert "2 usable node(s); 3 are needed" in str(failure.value)


def test_full_node_means_no_room_on_three_nodes() -> None:
    topology = cluster((1, [10]), (1, [10]), (1, [10]))
    usage = {DeviceId("n2d0"): 10 * GiB}
    with pytest.raises(NoCapacity) as failure:
        plan_volume(request(GiB), topology, usage)
    assert failure.value.reason == "NoDeviceWithSpace"
    assert "2 node(s) have room" in str(failure.value)


def test_most_free_device_wins() -> None:
    plan = plan_volume(request(GiB), cluster((1, [10, 50]), (1, [10, 50]), (1, [50, 10])), {})
    assert {b.device for b in plan.bricks} == {"n0d1", "n1d1", "n2d0"}


def test_strict_zones_need_as_many_zones_as_bricks() -> None:
    topology = cluster((1, [10]), (1, [10]), (2, [10]), (2, [10]))
    with pytest.raises(NoCapacity) as failure:
        plan_volume(request(GiB, zones=ZoneChecking.STRICT), topology, {})
    assert failure.value.reason == "NotEnoughZones"


def test_best_effort_zones_spread_when_possible() -> None:
    topology = cluster((1, [90]), (1, [80]), (2, [10]), (3, [10]))
    plan = plan_volume(request(GiB), topology, {})
    zones = {topology.node(b.node).zone for b in plan.bricks}
    assert zones == {1, 2, 3}


def test_arbiter_brick_is_small_and_last() -> None:
    plan = plan_volume(request(64 * GiB, Replicate(arbiter=True)), cluster((1, [100]), (1, [100]), (1, [100])), {})
    assert [b.arbiter for b in plan.bricks] == [False, False, True]
    assert plan.bricks[2].size == 4 * GiB


def test_disperse_bricks_hold_a_share() -> None:
    plan = plan_volume(request(4 * GiB, Disperse(data=2, redundancy=1)), cluster((1, [10]), (1, [10]), (1, [10])), {})
    assert len(plan.bricks) == 3
    assert all(b.size == 2 * GiB for b in plan.bricks)


def test_big_volume_splits_into_sets() -> None:
    limits = Limits(max_brick=10 * GiB)
    topology = cluster(*[(1, [100])] * 3)
    plan = plan_volume(request(30 * GiB), topology, {}, limits)
    assert plan.sets == 4  # 30 GiB in sets of 1, 2 are above the 10 GiB brick limit
    assert all(b.size == 7.5 * GiB for b in plan.bricks)


def test_too_many_bricks() -> None:
    limits = Limits(max_brick=GiB, max_bricks=6)
    with pytest.raises(NoCapacity) as failure:
        plan_volume(request(10 * GiB), cluster(*[(1, [100])] * 3), {}, limits)
    assert failure.value.reason == "TooManyBricks"


def test_small_volume_gets_a_minimum_brick() -> None:
    plan = plan_volume(request(100 * 1024**2), cluster(*[(1, [10])] * 3), {})
    assert all(b.size == GiB for b in plan.bricks)


def test_same_request_same_plan() -> None:
    topology = cluster(*[(1, [10, 10])] * 5)
    assert plan_volume(request(GiB), topology, {}) == plan_volume(request(GiB), topology, {})


def test_distribute_is_one_brick() -> None:
    plan = plan_volume(request(GiB, Distribute()), cluster((1, [10])), {})
    assert len(plan.bricks) == 1


def test_disabled_nodes_are_not_used() -> None:
    base = cluster(*[(1, [10])] * 4)
    disabled = dataclasses.replace(base, nodes=(dataclasses.replace(base.nodes[0], enabled=False), *base.nodes[1:]))
    plan = plan_volume(request(GiB), disabled, {})
    assert "n0" not in {b.node for b in plan.bricks}


durabilities = st.one_of(
    st.just(Distribute()),
    st.builds(Replicate, replica=st.integers(2, 4)),
    st.just(Replicate(replica=3, arbiter=True)),
    st.builds(Disperse, data=st.integers(2, 4), redundancy=st.just(1)),
)


@st.composite
def topologies(draw: st.DrawFn) -> tuple[Cluster, dict[DeviceId, int]]:
    count = draw(st.integers(1, 8))
    nodes = [
        (draw(st.integers(1, 3)), draw(st.lists(st.integers(1, 40), min_size=1, max_size=3))) for _ in range(count)
    ]
    topology = cluster(*nodes)
    usage = {d.id: draw(st.integers(0, d.capacity // GiB)) * GiB for n in topology.nodes for d in n.devices}
    return topology, usage


@settings(max_examples=300, deadline=None)
@given(topologies(), durabilities, st.integers(1, 60), st.sampled_from(list(ZoneChecking)))
def test_placement_invariants(
    world: tuple[Cluster, dict[DeviceId, int]], durability: Durability, size_gib: int, zones: ZoneChecking
) -> None:
    topology, usage = world
    try:
        plan = plan_volume(request(size_gib * GiB, durability, zones), topology, usage, Limits(max_brick=16 * GiB))
    except NoCapacity as failure:
        assert failure.reason in {
            "NotEnoughNodes",
            "NotEnoughZones",
            "NoDeviceWithSpace",
            "TooManyBricks",
            "MinimumBrickSize",
        }
        return
    # never two bricks of one set on one node
    for set_index in range(plan.sets):
        nodes = [b.node for b in plan.bricks if b.set_index == set_index]
        assert len(nodes) == len(set(nodes)) == durability.set_size
        if zones is ZoneChecking.STRICT:
            assert len({topology.node(n).zone for n in nodes}) == len(nodes)
    # capacity is never exceeded
    taken = Counter[DeviceId]()
    for brick in plan.bricks:
        taken[brick.device] += brick.size
    for node in topology.nodes:
        for device in node.devices:
            assert usage.get(device.id, 0) + taken[device.id] <= device.capacity
    # the volume's data fits: data bricks x brick size >= requested size
    assert plan.sets * durability.data_bricks * plan.brick_size >= size_gib * GiB
