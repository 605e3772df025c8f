"""Evacuation: the pure planner (table-driven and hypothesis) and the worker moving bricks on fake nodes."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioner.cli.parser import build_parser
from provisioner.cli.requests import topology_change
from provisioner.domain import (
    Brick,
    BrickId,
    Cluster,
    ClusterId,
    DeviceId,
    Disperse,
    Distribute,
    Durability,
    NodeId,
    Replacement,
    Replicate,
    Volume,
    VolumeId,
    derive_id,
)
from provisioner.errors import CannotEvacuate, NoCapacity, NodeUnreachable
from provisioner.events import catalog, models, results
from provisioner.events.envelope import Event, new_event
from provisioner.executor import Argv, CommandResult
from provisioner.planning import evacuation
from provisioner.planning.allocator import Limits, PlacementRequest, plan_volume
from provisioner.state import VOLUME_PREFIX, DesiredState, StateChange
from tests import fakes
from tests.fakes import FakeNodes, Fault, cluster, default_topology, xml

GiB = 1024**3
LIMITS = Limits()


# --- the pure planner ---------------------------------------------------------------------------------


REPLICA3 = Replicate()


def volume(
    name: str, devices: list[str], durability: Durability = REPLICA3, *, size: int = GiB, arbiter_last: bool = False
) -> Volume:
    """A one-set volume with a brick on each of ``devices`` (``n<i>d<j>`` names its node)."""
    volume_id = VolumeId(derive_id("volume", name))
    bricks = tuple(
        Brick(
            id=BrickId(derive_id(volume_id, "0", str(p))),
            node=NodeId(d.split("d")[0]),
            device=DeviceId(d),
            size=size,
            set_index=0,
            arbiter=arbiter_last and p == len(devices) - 1,
        )
        for p, d in enumerate(devices)
    )
    return Volume(id=volume_id, name=name, cluster=ClusterId("c"), size=size, durability=durability, bricks=bricks)


def usage_of(*volumes: Volume) -> dict[DeviceId, int]:
    used: Counter[DeviceId] = Counter()
    for v in volumes:
        for b in v.bricks:
            used[b.device] += b.size
    return dict(used)


def test_a_device_brick_moves_to_the_other_device_of_its_node_when_the_others_hold_the_set() -> None:
    topology = cluster((1, [10, 10]), (2, [10, 10]), (3, [10, 10]))
    v = volume("v", ["n0d0", "n1d0", "n2d0"])
    [move] = evacuation.plan_evacuation([v], topology, usage_of(v), {DeviceId("n0d0")}, LIMITS)
    assert move.old == v.bricks[0]
    assert (move.new.node, move.new.device) == ("n0", "n0d1")
    assert (move.new.size, move.new.set_index, move.new.arbiter) == (GiB, 0, False)
    assert move.new.id == derive_id(v.id, "replace", v.bricks[0].id)


def test_a_node_remove_never_lands_on_the_node_or_next_to_the_set() -> None:
    topology = cluster((1, [10, 10]), (1, [10]), (1, [10]), (1, [1, 10]))
    v = volume("v", ["n0d0", "n1d0", "n2d0"])
    leaving = {DeviceId("n0d0"), DeviceId("n0d1")}
    [move] = evacuation.plan_evacuation([v], topology, usage_of(v), leaving, LIMITS)
    assert (move.new.node, move.new.device) == ("n3", "n3d1")  # most free, on the only node outside the set


def test_the_arbiter_stays_an_arbiter_of_its_size() -> None:
    topology = cluster((1, [10]), (1, [10]), (1, [10]), (1, [10]))
    v = volume("v", ["n0d0", "n1d0", "n2d0"], Replicate(arbiter=True), arbiter_last=True)
    [move] = evacuation.plan_evacuation([v], topology, usage_of(v), {DeviceId("n2d0")}, LIMITS)
    assert move.new.arbiter and move.new.size == v.bricks[2].size and move.new.node == "n3"


def test_a_free_zone_is_preferred_over_more_free_bytes() -> None:
    topology = cluster((1, [10]), (2, [10]), (3, [10]), (2, [50]), (4, [20]))
    v = volume("v", ["n0d0", "n1d0", "n2d0"])
    [move] = evacuation.plan_evacuation([v], topology, usage_of(v), {DeviceId("n0d0")}, LIMITS)
    assert move.new.node == "n4"  # zone 4 is new to the set; n3 has more room but in zone 2, as n1


def test_distribute_is_refused_naming_the_volume_even_when_others_could_move() -> None:
    topology = cluster((1, [10, 10]), (1, [10]), (1, [10]))
    replicated = volume("a-replicated", ["n0d0", "n1d0", "n2d0"])
    plain = volume("b-plain", ["n0d0"], Distribute())
    with pytest.raises(CannotEvacuate) as refused:
        evacuation.plan_evacuation([replicated, plain], topology, usage_of(replicated, plain), {"n0d0"}, LIMITS)  # type: ignore[arg-type]
    assert refused.value.reason == "CannotEvacuate"
    assert "b-plain" in str(refused.value)


def test_no_node_outside_the_set_is_not_enough_nodes() -> None:
    topology = cluster((1, [10]), (1, [10]), (1, [10]))
    v = volume("v", ["n0d0", "n1d0", "n2d0"])
    with pytest.raises(NoCapacity) as failure:
        evacuation.plan_evacuation([v], topology, usage_of(v), {DeviceId("n0d0")}, LIMITS)
    assert failure.value.reason == "NotEnoughNodes"
    assert "volume v" in str(failure.value) and v.bricks[0].id in str(failure.value)


def test_no_room_is_no_device_with_space_naming_volume_and_brick() -> None:
    topology = cluster((1, [10]), (1, [10]), (1, [10]), (1, [10]))
    v = volume("v", ["n0d0", "n1d0", "n2d0"])
    used = {**usage_of(v), DeviceId("n3d0"): 10 * GiB}
    with pytest.raises(NoCapacity) as failure:
        evacuation.plan_evacuation([v], topology, used, {DeviceId("n0d0")}, LIMITS)
    assert failure.value.reason == "NoDeviceWithSpace"
    assert "volume v" in str(failure.value) and v.bricks[0].id in str(failure.value)


def test_disabled_devices_take_no_replacement() -> None:
    topology = cluster((1, [10, 10]), (1, [10]), (1, [10]))
    node = topology.nodes[0]
    disabled = dataclasses.replace(node.devices[1], enabled=False)
    node = dataclasses.replace(node, devices=(node.devices[0], disabled))
    topology = dataclasses.replace(topology, nodes=(node, *topology.nodes[1:]))
    v = volume("v", ["n0d0", "n1d0", "n2d0"])
    with pytest.raises(NoCapacity):
        evacuation.plan_evacuation([v], topology, usage_of(v), {DeviceId("n0d0")}, LIMITS)


def test_the_plan_is_deterministic_and_sees_its_own_moves() -> None:
    topology = cluster((1, [10, 2]), (1, [10]), (1, [10]), (1, [3]))
    volumes = [volume(f"v{i}", ["n0d0", "n1d0", "n2d0"]) for i in range(3)]
    leaving = {DeviceId("n0d0")}
    first = evacuation.plan_evacuation(volumes, topology, usage_of(*volumes), leaving, LIMITS)
    again = evacuation.plan_evacuation(list(reversed(volumes)), topology, usage_of(*volumes), leaving, LIMITS)
    assert first == again
    assert [m.volume for m in first] == [v.id for v in volumes]  # by name
    placed = Counter(m.new.device for m in first)
    assert placed[DeviceId("n3d0")] == 3 - placed[DeviceId("n0d1")]
    assert placed[DeviceId("n0d1")] <= 2 and placed[DeviceId("n3d0")] <= 3  # capacity of each respected


def test_moving_moved_abandoned_and_pending() -> None:
    topology = cluster((1, [10, 10]), (1, [10]), (1, [10]))
    v = volume("v", ["n0d0", "n1d0", "n2d0"])
    [move] = evacuation.plan_evacuation([v], topology, usage_of(v), {DeviceId("n0d0")}, LIMITS)
    during = evacuation.moving(v, move)
    assert [b.id for b in during.bricks] == [v.bricks[0].id, move.new.id, v.bricks[1].id, v.bricks[2].id]
    assert during.replacing == (Replacement(old=move.old.id, new=move.new.id),)
    assert evacuation.moving(during, move) == during
    assert evacuation.pending(during) == [move]
    after = evacuation.moved(during, move)
    assert [b.id for b in after.bricks] == [move.new.id, v.bricks[1].id, v.bricks[2].id]
    assert after.replacing == () and evacuation.pending(after) == []
    assert evacuation.abandoned(during, move) == v


def test_a_record_of_an_older_version_decodes_without_replacing() -> None:
    v = volume("v", ["n0d0", "n1d0", "n2d0"])
    record = json.loads(StateChange.put_volume(v).value or b"")
    del record["replacing"]
    state = DesiredState()
    state.apply(StateChange(VOLUME_PREFIX + v.id, json.dumps(record).encode()))
    assert state.volumes[v.id] == v
    moving = evacuation.moving(v, evacuation.Move(v.id, v.bricks[0], Brick(BrickId("f" * 32), NodeId("n0"),
                                                                           DeviceId("n0d1"), GiB, 0)))  # fmt: skip
    state.apply(StateChange.put_volume(moving))
    assert state.volumes[v.id].replacing == moving.replacing
    assert state.usage(ClusterId("c"))[DeviceId("n0d1")] == GiB  # both bricks are counted during a move


DURABILITIES: list[Durability] = [
    Replicate(replica=2),
    Replicate(),
    Replicate(arbiter=True),
    Disperse(data=2, redundancy=1),
]


@st.composite
def worlds(draw: st.DrawFn) -> tuple[Cluster, list[Volume], set[DeviceId]]:
    shape = draw(
        st.lists(
            st.tuples(st.integers(1, 3), st.lists(st.sampled_from([2, 4, 8, 16]), min_size=1, max_size=3)),
            min_size=3,
            max_size=6,
        )
    )
    topology = cluster(*shape)
    used: dict[DeviceId, int] = {}
    volumes: list[Volume] = []
    for number in range(draw(st.integers(1, 5))):
        durability = draw(st.sampled_from(DURABILITIES))
        volume_id = VolumeId(derive_id("volume", str(number)))
        size = draw(st.integers(1, 3)) * GiB
        try:
            plan = plan_volume(PlacementRequest(volume=volume_id, size=size, durability=durability), topology, used)
        except NoCapacity:
            continue
        for b in plan.bricks:
            used[b.device] = used.get(b.device, 0) + b.size
        volumes.append(
            Volume(
                id=volume_id,
                name=f"v{number}",
                cluster=topology.id,
                size=size,
                durability=durability,
                bricks=plan.bricks,
            )
        )
    if draw(st.booleans()):
        node = draw(st.sampled_from(topology.nodes))
        leaving = {d.id for d in node.devices}
    else:
        leaving = {draw(st.sampled_from([d.id for n in topology.nodes for d in n.devices]))}
    return topology, volumes, leaving


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_after_the_moves_no_set_shares_a_node_and_no_device_overflows(
    world: tuple[Cluster, list[Volume], set[DeviceId]],
) -> None:
    topology, volumes, leaving = world
    try:
        moves = evacuation.plan_evacuation(volumes, topology, usage_of(*volumes), leaving, LIMITS)
    except NoCapacity as failure:
        assert failure.reason in ("NotEnoughNodes", "NoDeviceWithSpace")
        return
    by_id = {v.id: v for v in volumes}
    for move in moves:
        by_id[move.volume] = evacuation.moved(evacuation.moving(by_id[move.volume], move), move)
        assert (move.new.size, move.new.set_index, move.new.arbiter) == (
            move.old.size,
            move.old.set_index,
            move.old.arbiter,
        )
    capacity = {d.id: d.capacity for n in topology.nodes for d in n.devices}
    for before in volumes:
        after = by_id[before.id]
        assert len(after.bricks) == len(before.bricks) and after.replacing == ()
        assert not any(b.device in leaving for b in after.bricks)
        for set_index in {b.set_index for b in after.bricks}:
            nodes = [b.node for b in after.bricks if b.set_index == set_index]
            assert len(nodes) == len(set(nodes)), f"two bricks of set {set_index} of {after.name} on one node"
    for device, used in usage_of(*by_id.values()).items():
        assert used <= capacity[device]


# --- the worker on fake nodes ---------------------------------------------------------------------------


class Crash(BaseException):
    """The daemon dies here (not an error the worker may catch)."""


def replace_brick(nodes: FakeNodes, *, crash_after: int = 0, lose_answer: bool = False) -> Fault:
    """``gluster volume replace-brick`` for the fake (swap in place), optionally dying right after it."""
    done = {"count": 0}

    def fault(host: str, argv: Argv) -> BaseException | CommandResult | None:
        if "replace-brick" not in argv:
            return None
        at = argv.index("replace-brick")
        name, old, new = argv[at + 1 : at + 4]
        fake = nodes.volumes.get(name)
        if fake is None:
            return CommandResult(host, argv, 0, xml(-1, f"Volume {name} does not exist"), "")
        if old not in fake.bricks:
            return CommandResult(host, argv, 0, xml(-1, f"brick: {old} does not exist in volume: {name}"), "")
        fake.bricks[fake.bricks.index(old)] = new
        done["count"] += 1
        if done["count"] <= crash_after:
            return Crash()
        if lose_answer and done["count"] == 1:
            return CommandResult(host, argv, 0, xml(-1, "Commit failed on localhost. Please check log file"), "")
        return CommandResult(host, argv, 0, xml(0, "replace-brick commit force operation successful"), "")

    return fault


class World(fakes.World):
    """The handler on nodes in a zone each, whose gluster also swaps bricks (``replace_brick``)."""

    def __init__(self, nodes: int = 3, devices: int = 2) -> None:
        super().__init__(topology=default_topology(nodes, devices, zone_per_node=True))
        self.nodes.faults.append(replace_brick(self.nodes))

    async def setup(self, **fields: object) -> Volume:
        await self.handle(new_event(catalog.TOPOLOGY_LOAD_REQUESTED, self.topology, source="/t"))
        data = models.ProvisionVolume.model_validate({"cluster": "dev", "size": GiB, "name": "v", **fields})
        outcome = await self.handle(new_event(catalog.PROVISION_REQUESTED, data, source="/t"))
        assert isinstance(outcome.result.data, results.VolumeProvisioned), outcome.result.data
        return self.volume()

    def volume(self) -> Volume:
        [v] = self.state.volumes.values()
        return v

    def cluster(self) -> Cluster:
        return self.state.clusters[ClusterId("dev")]

    def device_remove(self, brick: Brick, *, evacuate: bool = True) -> Event:
        node, device = self.cluster().device(brick.device)
        data = models.DeviceRef(cluster="dev", host=node.manage, name=device.name, evacuate=evacuate)
        return new_event(catalog.DEVICE_REMOVE_REQUESTED, data, source="/t")

    def gluster_bricks(self) -> set[tuple[str, str]]:
        return {(b.split(":")[0], b.split(":")[1]) for b in self.nodes.volumes["v"].bricks}

    def path_of(self, brick: Brick, cluster: Cluster | None = None) -> tuple[str, str]:
        node, device = (cluster or self.cluster()).device(brick.device)
        return node.storage, f"{(cluster or self.cluster()).brick_root}/vg_{device.id}/brick_{brick.id}/brick"


def device_ids(cluster: Cluster) -> set[DeviceId]:
    return {d.id for n in cluster.nodes for d in n.devices}


async def test_device_remove_evacuates_to_the_other_device_of_the_node() -> None:
    world = World()
    before = await world.setup()
    old = before.bricks[0]
    cluster = world.cluster()
    outcome = await world.handle(world.device_remove(old))
    assert isinstance(outcome.result.data, results.TopologyLoaded), outcome.result.data
    assert outcome.result.data.devices == 5

    after = world.volume()
    assert after.replacing == ()
    [new] = [b for b in after.bricks if b.id not in {b.id for b in before.bricks}]
    assert after.bricks[0] == new and after.bricks[1:] == before.bricks[1:]  # the old brick's place
    assert new.node == old.node and new.device != old.device
    assert world.gluster_bricks() == {world.path_of(b, cluster) for b in after.bricks}
    assert old.device not in device_ids(world.cluster())
    host, old_path = world.path_of(old, cluster)
    mount = old_path.removesuffix("/brick")
    assert (host, mount) not in world.nodes.mounts and (host, mount) not in world.nodes.fstab
    assert not any(f"brick_{old.id}" in path for _, path in world.nodes.files)
    # intent before node work: the record with both bricks and the pair, then the result
    recorded = [json.loads(c.value or b"") for c in world.intent.recorded if c.key == f"volume/{before.id}"]
    assert [len(r["bricks"]) for r in recorded[-2:]] == [4, 3]
    assert recorded[-2]["replacing"] == [{"old": old.id, "new": new.id}]
    assert recorded[-1]["replacing"] == []
    [progress] = [e for e in world.intent.progress_events if e.type == "org.gluster.device.remove.progressed.v1"]
    assert progress.data.step == "brick_moved" and old.id in progress.data.message  # type: ignore[attr-defined]


async def test_node_remove_evacuates_every_brick_and_detaches() -> None:
    world = World(nodes=4, devices=1)
    before = await world.setup(size=3 * GiB)
    leaving = before.bricks[0].node
    host = world.cluster().node(leaving).manage
    world.nodes.peers = {f"10.0.0.{i}" for i in range(1, 5)}
    data = models.NodeRef(cluster="dev", host=host, evacuate=True)
    outcome = await world.handle(new_event(catalog.NODE_REMOVE_REQUESTED, data, source="/t"))
    assert isinstance(outcome.result.data, results.TopologyLoaded), outcome.result.data
    assert outcome.result.data.nodes == 3
    after = world.volume()
    assert all(b.node != leaving for b in after.bricks)
    assert len({b.node for b in after.bricks if b.set_index == 0}) == 3
    assert host not in world.nodes.peers


async def test_distribute_is_refused_before_any_command() -> None:
    world = World()
    before = await world.setup(durability={"type": "none"})
    calls = len(world.nodes.calls)
    recorded = len(world.intent.recorded)
    outcome = await world.handle(world.device_remove(before.bricks[0]))
    assert isinstance(outcome.result.data, results.RequestFailed)
    assert outcome.result.data.reason == "CannotEvacuate" and "volume v " in outcome.result.data.message
    assert len(world.nodes.calls) == calls and len(world.intent.recorded) == recorded
    assert world.volume() == before and before.bricks[0].device in device_ids(world.cluster())


async def test_without_evacuate_a_device_in_use_is_still_refused() -> None:
    world = World()
    before = await world.setup()
    outcome = await world.handle(world.device_remove(before.bricks[0], evacuate=False))
    assert isinstance(outcome.result.data, results.RequestFailed) and outcome.result.data.reason == "DeviceInUse"


async def test_evacuate_is_for_remove_only() -> None:
    world = World()
    await world.setup()
    data = models.NodeRef(cluster="dev", host="10.0.0.1", evacuate=True)
    outcome = await world.handle(new_event(catalog.NODE_DISABLE_REQUESTED, data, source="/t"))
    assert isinstance(outcome.result.data, results.RequestFailed) and outcome.result.data.reason == "InvalidTopology"


@pytest.mark.parametrize("crash", ["after_replace_brick", "on_new_brick_mkfs", "on_old_brick_umount"])
async def test_a_crash_mid_move_resumes_the_same_replacement(crash: str) -> None:
    world = World()
    before = await world.setup()
    old = before.bricks[0]
    cluster = world.cluster()
    event = world.device_remove(old)
    world.nodes.faults.clear()
    if crash == "after_replace_brick":
        world.nodes.faults.append(replace_brick(world.nodes, crash_after=1))
    else:
        world.nodes.faults.append(replace_brick(world.nodes))
        program = "mkfs.xfs" if crash == "on_new_brick_mkfs" else "umount"
        fired = {"done": False}

        def die(host: str, argv: Argv) -> BaseException | None:
            if argv[0] == program and not fired["done"]:
                fired["done"] = True
                return Crash()
            return None

        world.nodes.faults.insert(0, die)
    with pytest.raises(Crash):
        await world.handle(event)
    interrupted = world.volume()
    [pair] = interrupted.replacing
    assert pair.old == old.id and len(interrupted.bricks) == 4  # both bricks owned
    outcome = await world.handle(event)  # redelivery
    assert isinstance(outcome.result.data, results.TopologyLoaded), outcome.result.data
    after = world.volume()
    assert after.replacing == () and after.bricks[0].id == pair.new
    assert world.gluster_bricks() == {world.path_of(b, cluster) for b in after.bricks}
    assert len(world.nodes.mounts) == 3 and len(world.nodes.files) == 3
    assert old.device not in device_ids(world.cluster())


async def test_a_lost_answer_counts_once_gluster_lists_the_new_brick() -> None:
    world = World()
    before = await world.setup()
    world.nodes.faults[:] = [replace_brick(world.nodes, lose_answer=True)]
    outcome = await world.handle(world.device_remove(before.bricks[0]))
    assert isinstance(outcome.result.data, results.TopologyLoaded), outcome.result.data
    assert len(world.nodes.volumes["v"].bricks) == 3
    assert len([argv for _, argv in world.nodes.calls if "replace-brick" in argv]) == 1  # judged by volume info


async def test_a_refused_replace_brick_removes_the_new_brick_and_keeps_the_device() -> None:
    world = World()
    before = await world.setup()

    def refuse(host: str, argv: Argv) -> CommandResult | None:
        if "replace-brick" in argv:
            return CommandResult(host, argv, 0, xml(-1, "Commit failed on 10.0.0.2: disk on fire"), "")
        return None

    world.nodes.faults[:] = [refuse]
    outcome = await world.handle(world.device_remove(before.bricks[0]))
    assert isinstance(outcome.result.data, results.RequestFailed)
    assert outcome.result.data.reason == "GlusterFailed" and "disk on fire" in outcome.result.data.message
    assert world.volume() == before
    assert len(world.nodes.mounts) == 3 and len(world.nodes.files) == 3
    assert before.bricks[0].device in device_ids(world.cluster())


async def test_a_stale_mark_on_the_new_brick_is_rebuilt_once() -> None:
    world = World()
    before = await world.setup()
    swap = replace_brick(world.nodes)
    refused = {"left": 1}

    def marked(host: str, argv: Argv) -> BaseException | CommandResult | None:
        if "replace-brick" in argv and refused["left"]:
            refused["left"] -= 1
            new = argv[argv.index("replace-brick") + 3]
            return CommandResult(host, argv, 0, xml(-1, f"{new} is already part of a volume"), "")
        return swap(host, argv)

    world.nodes.faults[:] = [marked]
    outcome = await world.handle(world.device_remove(before.bricks[0]))
    assert isinstance(outcome.result.data, results.TopologyLoaded), outcome.result.data
    replaced = [argv for _, argv in world.nodes.calls if "replace-brick" in argv]
    assert len(replaced) == 2 and replaced[0] == replaced[1]


async def test_a_dead_node_does_not_block_its_removal() -> None:
    world = World(nodes=4, devices=1)
    before = await world.setup()
    dead = world.cluster().node(before.bricks[0].node).manage

    def down(host: str, argv: Argv) -> Exception | None:
        return NodeUnreachable(host, "no route to host") if host == dead else None

    world.nodes.faults.insert(0, down)
    data = models.NodeRef(cluster="dev", host=dead, evacuate=True)
    outcome = await world.handle(new_event(catalog.NODE_REMOVE_REQUESTED, data, source="/t"))
    assert isinstance(outcome.result.data, results.TopologyLoaded), outcome.result.data
    assert all(world.cluster().node(b.node).manage != dead for b in world.volume().bricks)
    assert not any(h == dead and "replace-brick" in argv for h, argv in world.nodes.calls)  # asked elsewhere
    assert any(h == dead for h, _ in world.nodes.mounts)  # the dead node's brick is left where it is


async def test_a_dead_node_still_blocks_a_device_remove_on_it() -> None:
    world = World()
    before = await world.setup()
    old = before.bricks[0]
    host = world.cluster().node(old.node).manage

    def down_after_swap(h: str, argv: Argv) -> Exception | None:
        swapped = any("replace-brick" in a for _, a in world.nodes.calls)
        return NodeUnreachable(h, "gone") if h == host and swapped and argv[0] != "gluster" else None

    world.nodes.faults.insert(0, down_after_swap)
    outcome = await world.handle(world.device_remove(old))
    assert isinstance(outcome.result.data, results.RequestFailed) and outcome.result.data.retriable
    assert world.volume().replacing != ()  # swapped, old brick not destroyed: the move stays recorded
    assert old.device in device_ids(world.cluster())
    world.nodes.faults[:] = [replace_brick(world.nodes)]
    again = await world.handle(world.device_remove(old))
    assert isinstance(again.result.data, results.TopologyLoaded), again.result.data
    assert world.volume().replacing == () and len(world.nodes.files) == 3


# --- CLI ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["node", "remove", "--cluster", "c", "--host", "h1", "--evacuate"],
            models.NodeRef(cluster="c", host="h1", evacuate=True),
        ),
        (["node", "remove", "--cluster", "c", "--host", "h1"], models.NodeRef(cluster="c", host="h1")),
        (
            ["device", "remove", "--cluster", "c", "--host", "h1", "--name", "/d", "--evacuate"],
            models.DeviceRef(cluster="c", host="h1", name="/d", evacuate=True),
        ),
    ],
)
def test_cli_evacuate_flag(argv: list[str], expected: models.Model) -> None:
    _, data = topology_change(build_parser().parse_args(argv))
    assert data == expected


def test_enable_has_no_evacuate_flag() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["device", "enable", "--cluster", "c", "--host", "h", "--name", "/d", "--evacuate"])


async def test_a_move_waits_while_its_set_is_healing() -> None:
    world = World()
    before = await world.setup()
    old, other = before.bricks[0], before.bricks[1]
    host, path = world.path_of(other)
    world.nodes.pending_heals[f"{host}:{path}"] = 7
    outcome = await world.handle(world.device_remove(old))
    assert isinstance(outcome.result.data, results.RequestFailed), outcome.result.data
    assert outcome.result.data.reason == "HealPending" and outcome.result.data.retriable
    assert "7 entries still to heal" in outcome.result.data.message
    assert world.volume().bricks == before.bricks and world.volume().replacing == ()  # nothing moved or left
    assert old.device in device_ids(world.cluster())

    world.nodes.pending_heals.clear()  # healed: the same request now goes through
    outcome = await world.handle(world.device_remove(old))
    assert isinstance(outcome.result.data, results.TopologyLoaded), outcome.result.data
