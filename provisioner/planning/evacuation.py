"""Planning an evacuation: where each brick on leaving devices moves before they leave the cluster.

Pure, like the allocator it builds on. Each brick on a leaving device gets a replacement of the same
size and arbiter flag in the same set, placed by ``plan_volume`` (most free bytes first, ties on the
hash ring) on the enabled devices that remain and that its volume's tags allow (``planning.tags``),
never on a node that holds another brick of the set, and preferably in a zone the set does not use
yet. The worker then swaps it in with gluster's ``replace-brick … commit force``, which needs a set
with redundancy: a distribute volume's brick is its only copy of its files, so such a volume refuses
the whole evacuation before anything is touched.

Replacement ids derive from the volume id and the id of the brick they replace, so a redelivered
request plans the same bricks. Nothing here runs a command or records state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from provisioner.domain import (
    Brick,
    BrickId,
    Cluster,
    DeviceId,
    Distribute,
    NodeId,
    Replacement,
    Volume,
    VolumeId,
    VolumeStatus,
    derive_id,
)
from provisioner.errors import CannotEvacuate, NoCapacity, NoDeviceWithSpace, NotEnoughNodes, VolumeConflict
from provisioner.planning.allocator import ALIGN, Limits, PlacementRequest, plan_volume
from provisioner.planning.index import Usage
from provisioner.planning.tags import TagMatch, eligible


@dataclass(frozen=True, slots=True)
class Move:
    """Brick ``old`` of volume ``volume`` is to be replaced by ``new`` (same set, size and role)."""

    volume: VolumeId
    old: Brick
    new: Brick


def affected(volumes: Iterable[Volume], leaving: Collection[DeviceId]) -> list[Volume]:
    """The volumes with a brick on a leaving device, in the order they are evacuated (name, id)."""
    return sorted((v for v in volumes if any(b.device in leaving for b in v.bricks)), key=lambda v: (v.name, v.id))


def check_movable(volumes: Iterable[Volume], leaving: Collection[DeviceId]) -> None:
    """Refuse, before anything is touched, an evacuation that would lose data or race another request."""
    for volume in affected(volumes, leaving):
        if isinstance(volume.durability, Distribute):
            raise CannotEvacuate(
                f"volume {volume.name} is distribute (no redundancy): its bricks on the leaving device(s) are "
                "the only copy of their files and cannot be moved with replace-brick; delete the volume, "
                "or remove the device without --evacuate once it holds no bricks"
            )
        if volume.status is not VolumeStatus.ONLINE:
            raise VolumeConflict(
                f"volume {volume.name} is {volume.status.value}; evacuate once its request has finished"
            )


def plan_evacuation(
    volumes: Iterable[Volume],
    cluster: Cluster,
    usage: Usage,
    leaving: Collection[DeviceId],
    limits: Limits,
) -> tuple[Move, ...]:
    """A move for every brick on a leaving device, volumes in (name, id) order and bricks in volume
    order; each move sees the space and set positions of the ones before it.

    Raises CannotEvacuate or VolumeConflict via ``check_movable``, and NotEnoughNodes or
    NoDeviceWithSpace naming the volume and the brick.
    """
    chosen = affected(volumes, leaving)
    check_movable(chosen, leaving)
    taken = dict(usage)
    moves: list[Move] = []
    for volume in chosen:
        current = volume
        for old in volume.bricks:
            if old.device not in leaving:
                continue
            new = plan_replacement(current, old, cluster, taken, leaving, limits)
            taken[new.device] = taken.get(new.device, 0) + new.size
            move = Move(volume.id, old, new)
            current = moved(moving(current, move), move)
            moves.append(move)
    return tuple(moves)


def plan_replacement(
    volume: Volume,
    old: Brick,
    cluster: Cluster,
    usage: Usage,
    leaving: Collection[DeviceId],
    limits: Limits,
) -> Brick:
    """Where brick ``old`` of ``volume`` goes: an enabled device not leaving, on a node without
    another brick of its set, preferring a zone the set does not use; raises NoCapacity."""
    mates = [b for b in volume.bricks if b.set_index == old.set_index and b.id != old.id]
    blocked = {b.node for b in mates}
    used_zones = {cluster.node(b.node).zone for b in mates}
    need = -(-old.size // ALIGN) * ALIGN
    pinned = dataclasses.replace(limits, min_brick=need, max_brick=need, max_bricks=1)
    request = PlacementRequest(
        volume=VolumeId(derive_id(volume.id, "replace", old.id)), size=need, durability=Distribute()
    )
    match = TagMatch.parse(volume.device_tag_match) if volume.device_tag_match else None
    candidates = eligible(_without(cluster, blocked, leaving), match, arbiter=old.arbiter)
    elsewhere = _without(candidates, {n.id for n in candidates.nodes if n.zone in used_zones}, ())
    attempts = [elsewhere, candidates] if len(elsewhere.nodes) < len(candidates.nodes) else [candidates]
    failure: NoCapacity | None = None
    for allowed in attempts:
        try:
            [placed] = plan_volume(request, allowed, usage, pinned).bricks
        except NoCapacity as e:
            failure = e
            continue
        return Brick(
            id=BrickId(derive_id(volume.id, "replace", old.id)),
            node=placed.node,
            device=placed.device,
            size=old.size,
            set_index=old.set_index,
            arbiter=old.arbiter,
        )
    assert failure is not None
    node, device = cluster.device(old.device)
    what = f"brick {old.id} of volume {volume.name} (on {node.manage}:{device.name}, {old.size} bytes)"
    if isinstance(failure, NotEnoughNodes):
        raise NotEnoughNodes(
            f"cannot move {what}: no node with an enabled device is left outside the leaving device(s) "
            f"and the {len(blocked)} node(s) holding the rest of its set",
        ) from failure
    largest = max(
        (d.capacity - usage.get(d.id, 0) for n in candidates.nodes if n.enabled for d in n.devices if d.enabled),
        default=0,
    )
    raise NoDeviceWithSpace(
        f"cannot move {what}: no enabled device outside its set's nodes has {need} bytes free "
        f"(the largest has {largest})",
    ) from failure


def moving(volume: Volume, move: Move) -> Volume:
    """The volume while ``move`` is under way: the new brick right after the old one, and the pair
    recorded, so a crash at any instant leaves both bricks owned and the move resumable."""
    if any(r.new == move.new.id for r in volume.replacing):
        return volume
    bricks: list[Brick] = []
    for brick in volume.bricks:
        bricks.append(brick)
        if brick.id == move.old.id:
            bricks.append(move.new)
    return dataclasses.replace(
        volume, bricks=tuple(bricks), replacing=(*volume.replacing, Replacement(old=move.old.id, new=move.new.id))
    )


def moved(volume: Volume, move: Move) -> Volume:
    """The volume once gluster has the new brick: it holds the old brick's place, and the pair is gone."""
    bricks = tuple(move.new if b.id == move.old.id else b for b in volume.bricks if b.id != move.new.id)
    replacing = tuple(r for r in volume.replacing if r.new != move.new.id)
    return dataclasses.replace(volume, bricks=bricks, replacing=replacing)


def abandoned(volume: Volume, move: Move) -> Volume:
    """The volume after a move is given up before the swap: as it was, without the new brick."""
    bricks = tuple(b for b in volume.bricks if b.id != move.new.id)
    replacing = tuple(r for r in volume.replacing if r.new != move.new.id)
    return dataclasses.replace(volume, bricks=bricks, replacing=replacing)


def pending(volume: Volume) -> list[Move]:
    """The moves a volume's record says are under way (from an interrupted or failed request)."""
    by_id = {b.id: b for b in volume.bricks}
    return [Move(volume.id, by_id[r.old], by_id[r.new]) for r in volume.replacing if r.old in by_id and r.new in by_id]


def _without(cluster: Cluster, nodes: Collection[NodeId], devices: Collection[DeviceId]) -> Cluster:
    """The cluster without some nodes and devices (for placement only; ids are unchanged)."""
    kept = []
    for node in cluster.nodes:
        if node.id in nodes:
            continue
        if devices and any(d.id in devices for d in node.devices):
            node = dataclasses.replace(node, devices=tuple(d for d in node.devices if d.id not in devices))
        kept.append(node)
    return dataclasses.replace(cluster, nodes=tuple(kept))
