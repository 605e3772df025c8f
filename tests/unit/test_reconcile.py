"""Drift between desired state and an inventory of the nodes (pure), and the parsers that feed it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest

from provisioner.domain import (
    Brick,
    BrickId,
    Cluster,
    ClusterId,
    Device,
    DeviceId,
    DeviceSpace,
    Node,
    NodeId,
    Replacement,
    Replicate,
    Volume,
    VolumeId,
    VolumeStatus,
)
from provisioner.planning.placement import ObservedSpace
from provisioner.reconcile.drift import (
    Drift,
    Inventory,
    NodeBrick,
    bricks_from_images,
    bricks_from_lvs,
    find_drift,
    with_mounts,
)
from provisioner.reconcile.inventory import NodeInventory
from provisioner.reconcile.runs import PeriodicReconciler
from provisioner.state import DesiredState, StateChange
from provisioner.storage.parsing import (
    BrickInfo,
    UnparsableOutput,
    VolumeInfo,
    parse_df_space,
    parse_findmnt,
    parse_getfattr_dump,
    parse_lvs_tags,
    parse_vg_space,
)

OWNER = "prod.state"
ROOT = "/var/lib/provisioner/mounts"


def hexid(n: int) -> str:
    return f"{n:032x}"


DEVICES = [DeviceId(hexid(100 + i)) for i in range(3)]
NODES = [NodeId(hexid(200 + i)) for i in range(3)]
HOSTS = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
CLUSTER = Cluster(
    id=ClusterId("c1"),
    nodes=tuple(
        Node(id=NODES[i], manage=HOSTS[i], storage=HOSTS[i], devices=(Device(DEVICES[i], "/srv/dev", 10**12),))
        for i in range(3)
    ),
    brick_root=ROOT,
)


def volume(n: int, *, status: VolumeStatus = VolumeStatus.ONLINE) -> Volume:
    bricks = tuple(
        Brick(id=BrickId(hexid(1000 * n + i)), node=NODES[i], device=DEVICES[i], size=2**30, set_index=0)
        for i in range(3)
    )
    return Volume(
        id=VolumeId(hexid(n)),
        name=f"vol_{n}",
        cluster=ClusterId("c1"),
        size=2**30,
        durability=Replicate(replica=3),
        bricks=bricks,
        status=status,
    )


def healthy(*volumes: Volume) -> Inventory:
    """What the nodes show when they hold exactly these volumes."""
    infos = tuple(
        VolumeInfo(
            name=v.name,
            id="uuid",
            status="Started",
            type="Replicate",
            brick_count=3,
            bricks=tuple(BrickInfo(HOSTS[i], "/p", "u", False) for i in range(3)),
            options={"user.provisioner.id": v.id, "user.provisioner.owner": OWNER},
        )
        for v in volumes
    )
    bricks = tuple(
        NodeBrick(HOSTS[i], b.device, b.id, v.id, OWNER, stored=True, mounted=True)
        for v in volumes
        for i, b in enumerate(v.bricks)
    )
    return Inventory(volumes=infos, bricks=bricks)


def test_agreement_is_no_drift() -> None:
    assert find_drift(CLUSTER, [volume(1), volume(2)], healthy(volume(1), volume(2)), OWNER) == []


def test_a_volume_and_a_brick_of_ours_without_records_are_repairable_orphans() -> None:
    found = find_drift(CLUSTER, [volume(1)], healthy(volume(1), volume(2)), OWNER)
    assert [(d.kind, d.subject, d.repairable) for d in found] == [
        ("orphan_brick", hexid(2000), True),
        ("orphan_brick", hexid(2001), True),
        ("orphan_brick", hexid(2002), True),
        ("orphan_volume", "vol_2", True),
    ]
    assert {d.node for d in found if d.kind == "orphan_brick"} == set(HOSTS)


def test_another_deployments_things_are_never_drift() -> None:
    stranger = healthy(volume(2))
    stranger = Inventory(
        volumes=tuple(
            dataclasses.replace(v, options={**v.options, "user.provisioner.owner": "staging.state"})
            for v in stranger.volumes or ()
        ),
        bricks=tuple(dataclasses.replace(b, owner="staging.state") for b in stranger.bricks),
    )
    untagged = Inventory(volumes=(dataclasses.replace((stranger.volumes or ())[0], options={}),), bricks=())
    assert find_drift(CLUSTER, [], stranger, OWNER) == []
    assert find_drift(CLUSTER, [], untagged, OWNER) == []


def test_another_clusters_volume_on_shared_nodes_is_not_an_orphan() -> None:
    """Two clusters carved from one pool: c1's nodes show c2's volume and bricks, which c2's record
    names; judging them against c1's records alone deleted live volumes under RECONCILE_REPAIR."""
    neighbour = dataclasses.replace(volume(2), cluster=ClusterId("c2"))
    assert find_drift(CLUSTER, [volume(1), neighbour], healthy(volume(1), neighbour), OWNER) == []
    # c2's devices are the same directories: c1's inventory names c2's bricks by c1's device ids
    theirs = dataclasses.replace(
        neighbour,
        bricks=tuple(dataclasses.replace(b, device=DeviceId(hexid(900 + i))) for i, b in enumerate(neighbour.bricks)),
    )
    assert find_drift(CLUSTER, [volume(1), theirs], healthy(volume(1), neighbour), OWNER) == []
    assert [d.kind for d in find_drift(CLUSTER, [volume(1)], healthy(volume(1), neighbour), OWNER)] == [
        "orphan_brick",
        "orphan_brick",
        "orphan_brick",
        "orphan_volume",
    ]


def test_missing_volume_and_brick_are_reported_not_repaired() -> None:
    nodes = healthy(volume(1))
    without_gluster = dataclasses.replace(nodes, volumes=())
    found = find_drift(CLUSTER, [volume(1)], without_gluster, OWNER)
    assert [(d.kind, d.repairable) for d in found] == [("missing_volume", False)]

    unmounted = dataclasses.replace(
        nodes, bricks=(dataclasses.replace(nodes.bricks[0], mounted=False), *nodes.bricks[1:])
    )
    [drift] = find_drift(CLUSTER, [volume(1)], unmounted, OWNER)
    assert (drift.kind, drift.node, drift.repairable) == ("missing_brick", HOSTS[0], False)
    assert "not mounted" in drift.detail


def test_a_missing_disk_is_named_with_the_bricks_it_held() -> None:
    nodes = healthy(volume(1), volume(2))
    gone = DEVICES[1]
    without = dataclasses.replace(
        nodes, bricks=tuple(b for b in nodes.bricks if b.device != gone), missing_devices=(gone,)
    )
    found = find_drift(CLUSTER, [volume(1), volume(2)], without, OWNER)
    assert [(d.kind, d.subject, d.node, d.repairable) for d in found] == [
        ("missing_brick", hexid(1001), HOSTS[1], False),
        ("missing_brick", hexid(2001), HOSTS[1], False),
        ("missing_device", "/srv/dev", HOSTS[1], False),
    ]
    assert found[-1].detail == (
        f"device /srv/dev on {HOSTS[1]} is missing (no volume group vg_{gone}); "
        f"it held 2 brick(s): {hexid(1001)} of vol_1, {hexid(2001)} of vol_2"
    )


def test_unreachable_nodes_and_an_unanswered_volume_list_are_not_judged() -> None:
    nodes = healthy(volume(1))
    blind = Inventory(volumes=None, bricks=nodes.bricks[1:], unreachable=(HOSTS[0],))
    assert find_drift(CLUSTER, [volume(1)], blind, OWNER) == []


def test_interrupted_records_are_repairable_only_when_stale() -> None:
    creating = volume(3, status=VolumeStatus.CREATING)
    fresh = find_drift(CLUSTER, [creating], Inventory(volumes=(), bricks=()), OWNER)
    stale = find_drift(CLUSTER, [creating], Inventory(volumes=(), bricks=()), OWNER, stale=lambda _: True)
    assert [(d.kind, d.repairable) for d in fresh] == [("interrupted", False)]
    assert [(d.kind, d.repairable) for d in stale] == [("interrupted", True)]


def test_a_brick_moved_off_its_record_is_an_orphan() -> None:
    nodes = healthy(volume(1))
    stray = NodeBrick(HOSTS[0], DEVICES[0], BrickId(hexid(9999)), hexid(1), OWNER, stored=True, mounted=True)
    [drift] = find_drift(CLUSTER, [volume(1)], dataclasses.replace(nodes, bricks=(*nodes.bricks, stray)), OWNER)
    assert (drift.kind, drift.subject) == ("orphan_brick", hexid(9999))
    assert "has no such brick" in drift.detail


GETFATTR = f"""# file: /srv/dev/brick_{hexid(1000)}.img
user.provisioner.owner="{OWNER}"
user.provisioner.volume="{hexid(1)}"

# file: /srv/dev/brick_{hexid(1001)}.img
user.provisioner.volume="{hexid(2)}"

# file: /srv/dev/notes.txt
user.other=0sAAAA
"""

FINDMNT = (
    f"/ /dev/vda1\n{ROOT}/vg_{DEVICES[0]}/brick_{hexid(1000)} /dev/loop3\n"
    f"/other/vg_{DEVICES[0]}/brick_{hexid(1002)} /dev/loop4\n"
    f"{ROOT}/vg_{DEVICES[0]}/brick_{hexid(1003)} /dev/loop5\n"
    "/mnt/with\\x20space /dev/loop9\n"
)

LVS = (
    '{"report": [{"lv": [{"lv_name": "brick_'
    + hexid(1000)
    + '", "vg_name": "vg_'
    + DEVICES[0]
    + '", "lv_tags": "provisioner.volume='
    + hexid(1)
    + ",provisioner.brick="
    + hexid(1000)
    + ",provisioner.owner="
    + OWNER
    + '"}, {"lv_name": "tp_'
    + hexid(1000)
    + '", "vg_name": "vg_'
    + DEVICES[0]
    + '", "lv_tags": ""}, {"lv_name": "root", "vg_name": "system", "lv_tags": ""}]}]}'
)


def test_parsers_read_getfattr_findmnt_and_lvs() -> None:
    images = parse_getfattr_dump(GETFATTR)
    assert images[f"/srv/dev/brick_{hexid(1000)}.img"] == {
        "user.provisioner.owner": OWNER,
        "user.provisioner.volume": hexid(1),
    }
    assert images["/srv/dev/notes.txt"] == {}  # binary values are not ours
    mounts = parse_findmnt(FINDMNT)
    assert ("/mnt/with space", "/dev/loop9") in mounts
    assert parse_lvs_tags(LVS)[0] == (
        f"vg_{DEVICES[0]}",
        f"brick_{hexid(1000)}",
        {"provisioner.volume": hexid(1), "provisioner.brick": hexid(1000), "provisioner.owner": OWNER},
    )


def test_a_node_inventory_joins_images_lvs_and_mounts() -> None:
    stored = bricks_from_images("h", parse_getfattr_dump(GETFATTR), {"/srv/dev": DEVICES[0]})
    joined = {b.brick: b for b in with_mounts("h", stored, parse_findmnt(FINDMNT), ROOT, {str(DEVICES[0])})}
    assert joined[BrickId(hexid(1000))] == NodeBrick("h", DEVICES[0], BrickId(hexid(1000)), hexid(1), OWNER, True, True)
    assert joined[BrickId(hexid(1001))].owner is None and not joined[BrickId(hexid(1001))].mounted
    assert joined[BrickId(hexid(1003))] == NodeBrick("h", DEVICES[0], BrickId(hexid(1003)), None, None, False, True)
    assert BrickId(hexid(1002)) not in joined  # mounted outside the brick root: not ours to judge
    [lv] = bricks_from_lvs("h", parse_lvs_tags(LVS), {str(DEVICES[0])})
    assert (lv.brick, lv.volume, lv.owner, lv.stored) == (hexid(1000), hexid(1), OWNER, True)


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "nodes"


def test_device_space_from_df_and_vgs() -> None:
    size, free = parse_df_space((FIXTURES / "df-file-device.txt").read_text())  # captured on a dev node
    assert 0 < free < size
    vgs = '{"report": [{"vg": [{"vg_name": "vg_x", "vg_size": "107374182400", "vg_free": "53687091200"}]}]}'
    assert parse_vg_space(vgs) == (107374182400, 53687091200)
    for bad in ("", "1B-blocks Avail\n"):
        with pytest.raises(UnparsableOutput):
            parse_df_space(bad)
    with pytest.raises(UnparsableOutput):
        parse_vg_space('{"report": []}')


def test_placement_trusts_the_smaller_of_declared_and_observed_room() -> None:
    observed = ObservedSpace()
    assert observed.limit(CLUSTER) is CLUSTER  # nothing observed yet: the topology as declared
    spaces = (DeviceSpace(DEVICES[0], size=10**13, free=5 * 2**30), DeviceSpace(DEVICES[1], 10**13, 10**13))
    observed.update(spaces, {DEVICES[0]: 2 * 2**30})
    limited = observed.limit(CLUSTER)
    capacities = {d.id: d.capacity for n in limited.nodes for d in n.devices}
    assert capacities == {DEVICES[0]: 7 * 2**30, DEVICES[1]: 10**12, DEVICES[2]: 10**12}
    assert observed.limit(CLUSTER) is limited, "one object between observations: the allocator keeps its index"
    observed.update(spaces, {DEVICES[0]: 3 * 2**30})
    assert observed.limit(CLUSTER) is not limited


def test_an_unfinished_brick_move_is_reported_as_interrupted() -> None:
    moving = volume(4)
    old, new = moving.bricks[0], dataclasses.replace(moving.bricks[0], id=BrickId(hexid(4999)))
    moving = dataclasses.replace(moving, bricks=(*moving.bricks, new), replacing=(Replacement(old=old.id, new=new.id),))
    [drift] = find_drift(CLUSTER, [moving], healthy(volume(4)), OWNER)
    assert (drift.kind, drift.repairable) == ("interrupted", False)
    assert "--evacuate" in drift.detail


# --- the daemon's periodic pass, among replicas ------------------------------------------------


class Nodes:
    """A NodeInventory that shows what ``holds`` says and records what it is asked to remove."""

    def __init__(self, *holds: Volume, then: tuple[Volume, ...] | None = None) -> None:
        """``then``: what the nodes hold from the second read on (a delete finished meanwhile)."""
        self.holds = holds
        self.then = then
        self.taken = 0
        self.removed: list[str] = []

    async def take(self, cluster: Cluster) -> Inventory:
        self.taken += 1
        return healthy(*(self.holds if self.taken == 1 or self.then is None else self.then))

    async def repair(self, cluster: Cluster, drift: Drift) -> None:
        self.removed.append(drift.subject)


def pass_over(
    nodes: Nodes, *, owns: Callable[[str], bool], later: tuple[Volume, ...] = ()
) -> tuple[PeriodicReconciler, DesiredState]:
    """A pass over CLUSTER holding volume 1 in state; ``later``: volumes whose records the catch-up
    brings (another replica, or a lane of ours, recorded them while the nodes were being read)."""
    state = DesiredState()
    state.apply(StateChange.put_cluster(CLUSTER))
    state.apply(StateChange.put_volume(volume(1)))

    async def catch_up() -> int:
        for v in later:
            state.apply(StateChange.put_volume(v))
        return len(later)

    reconciler = PeriodicReconciler(
        state, cast(NodeInventory, nodes), owner=OWNER, repair=True, owns=owns, catch_up=catch_up
    )
    return reconciler, state


async def test_a_replica_leaves_clusters_it_does_not_own_alone() -> None:
    nodes = Nodes(volume(1), volume(2))
    reconciler, _ = pass_over(nodes, owns=lambda cluster: False)
    assert await reconciler.run_once() == []
    assert nodes.taken == 0 and nodes.removed == []


async def test_volumes_recorded_while_the_nodes_were_read_are_not_orphans() -> None:
    nodes = Nodes(volume(1), volume(2))
    reconciler, _ = pass_over(nodes, owns=lambda cluster: True, later=(volume(2),))
    assert await reconciler.run_once() == []
    assert nodes.removed == []


async def test_a_cluster_that_moves_away_mid_pass_is_not_repaired() -> None:
    nodes = Nodes(volume(1), volume(2))
    answers = iter([True, True])  # owned when the pass starts and after the catch-up, then not
    reconciler, _ = pass_over(nodes, owns=lambda cluster: next(answers, False))
    found = await reconciler.run_once()
    assert {d.kind for d in found} == {"orphan_volume", "orphan_brick"}
    assert nodes.removed == []


async def test_an_owned_cluster_gets_its_true_orphans_removed() -> None:
    nodes = Nodes(volume(1), volume(2))
    reconciler, _ = pass_over(nodes, owns=lambda cluster: True)
    await reconciler.run_once()
    assert sorted(nodes.removed) == sorted([hexid(2000), hexid(2001), hexid(2002), "vol_2"])


async def test_a_delete_that_finishes_during_the_pass_is_no_drift() -> None:
    """The nodes were read while volume 2's delete ran (its bricks still there), state was caught up
    after its record went: the second read no longer shows them, so nothing is counted or removed."""
    nodes = Nodes(volume(1), volume(2), then=(volume(1),))
    reconciler, _ = pass_over(nodes, owns=lambda cluster: True)
    assert await reconciler.run_once() == []
    assert nodes.taken == 2 and nodes.removed == []


def test_a_node_that_was_not_read_is_never_reported_as_no_drift() -> None:
    from provisioner.cli import render
    from provisioner.reconcile.runs import Report

    blind = Report(unread=["cluster c1: node 10.0.0.1 could not be read"])
    assert not blind.clean
    assert render.report(blind, as_json=False) == "NOT JUDGED: cluster c1: node 10.0.0.1 could not be read"
    assert Report().clean and render.report(Report(), as_json=False).startswith("no drift")
