"""Brick placement: a pure function from (request, cluster, usage) to a plan.

No I/O, no clock, no randomness beyond the request id: the same inputs always give the same plan,
so a redelivered request re-plans identically and node steps can be matched by brick id.

Rules, in order of strength:
1. never two bricks of one set on one node (hard);
2. zones: with ``strict`` zone checking every brick of a set is in a different zone; otherwise
   bricks prefer zones not yet used by their set;
3. capacity-weighted: the device with the most free bytes wins, so no device fills while others
   stay empty; among equally free devices the first one clockwise on a hash ring, from a point
   hashed from (volume, set), wins, so equal devices share the load;
4. a volume too large for one brick is split into 2, 4, 8, ... distribute sets within the
   min/max brick size and the brick count limit (Heketi's rule);
5. Heketi's tags (``planning.tags``): a volume's device tag match, and the ``arbiter`` tag that
   keeps arbiter bricks off some devices and data bricks off others.
Failures name the specific shortfall instead of a bare "no space".

Cost: the devices are indexed by free bytes (``planning.index``), so a placement looks at a few
devices, not at all of them. A tagged cluster or a tag-matched volume is planned on a narrowed copy
of the cluster with an index of its own, built per plan (linear in the cluster's devices).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from provisioner.domain import Brick, BrickId, Cluster, DeviceId, Durability, NodeId, Replicate, VolumeId, derive_id
from provisioner.errors import (
    MinimumBrickSize,
    NoCapacity,
    NoDeviceWithSpace,
    NotEnoughNodes,
    NotEnoughZones,
    TooManyBricks,
)
from provisioner.planning.index import ClusterSlots, DeviceIndex, DeviceUsage, Usage, hash64
from provisioner.planning.tags import TagMatch, eligible

ALIGN = 4 * 1024**2  # brick sizes are rounded up to 4 MiB, the LVM extent size


class ZoneChecking(StrEnum):
    STRICT = "strict"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Limits:
    min_brick: int = 1024**3
    max_brick: int = 4 * 1024**4
    max_bricks: int = 32
    arbiter_ratio: int = 16  # arbiter brick = data brick / ratio (64 KiB average file, 4 KiB per inode)


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    volume: VolumeId
    size: int
    durability: Durability
    zone_checking: ZoneChecking = ZoneChecking.NONE
    tag_match: TagMatch | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    volume: VolumeId
    brick_size: int
    bricks: tuple[Brick, ...]

    @property
    def sets(self) -> int:
        return 1 + max((b.set_index for b in self.bricks), default=-1)


def _align(size: int) -> int:
    return -(-size // ALIGN) * ALIGN


def plan_volume(request: PlacementRequest, cluster: Cluster, usage: Usage, limits: Limits = Limits()) -> Plan:
    """Place every brick of the volume or raise NoCapacity with the most specific reason."""
    durability = request.durability
    has_arbiter = isinstance(durability, Replicate) and durability.arbiter
    data = arbiter = _index(cluster, cluster, usage)
    if request.tag_match is not None or data.topology.tagged:
        data_view = eligible(cluster, request.tag_match, arbiter=False)
        arbiter_view = eligible(cluster, request.tag_match, arbiter=True) if has_arbiter else data_view
        data = _index(data_view, cluster, usage)
        arbiter = data if arbiter_view is data_view else _index(arbiter_view, cluster, usage)
    _check_nodes(request, data.topology, arbiter.topology)
    last_failure: NoCapacity | None = None
    sets = 1
    while True:
        share = _align(-(-request.size // (sets * durability.data_bricks)))
        if sets > 1 and share < limits.min_brick:
            raise last_failure or MinimumBrickSize(
                f"volume of {request.size} bytes would need bricks below the minimum brick size {limits.min_brick}",
            )
        if sets * durability.set_size > limits.max_bricks:
            raise last_failure or TooManyBricks(f"volume would need more than {limits.max_bricks} bricks")
        # A volume smaller than one minimum brick still gets a brick of the minimum size.
        brick_size = max(share, limits.min_brick)
        if brick_size <= limits.max_brick:
            try:
                return _place(request, data, arbiter, limits, sets=sets, brick_size=brick_size)
            except NoCapacity as failure:
                last_failure = failure
        sets *= 2


def _index(view: Cluster, cluster: Cluster, usage: Usage) -> DeviceIndex:
    """The cached index of the whole cluster, or a throwaway one of a narrowed view of it."""
    if view is cluster and isinstance(usage, DeviceUsage):
        return usage.index_for(cluster)
    return DeviceIndex(ClusterSlots(view), usage)


def _check_nodes(request: PlacementRequest, data: ClusterSlots, arbiter: ClusterSlots) -> None:
    need = request.durability.set_size
    cluster = data.cluster
    matching = f" with devices matching {request.tag_match}" if request.tag_match is not None else ""
    usable = data.usable_nodes if arbiter is data else len(data.node_key_of.keys() | arbiter.node_key_of.keys())
    if usable < need:
        raise NotEnoughNodes(
            f"cluster {cluster.id} has {usable} usable node(s){matching}; {need} are needed for one brick set",
        )
    zones = data.usable_zones if arbiter is data else len(set(data.zones) | set(arbiter.zones))
    if request.zone_checking is ZoneChecking.STRICT and zones < need:
        raise NotEnoughZones(
            f"cluster {cluster.id} has {zones} zone(s){matching}; strict zone checking needs {need}",
        )


def _place(
    request: PlacementRequest,
    data: DeviceIndex,
    arbiter: DeviceIndex,
    limits: Limits,
    *,
    sets: int,
    brick_size: int,
) -> Plan:
    """Each brick from the index of its role (the same index unless tags set the roles apart).
    What the set has used is kept by node and device id, and turned into each index's slots."""
    arbiter_size = _align(max(limits.min_brick, brick_size // limits.arbiter_ratio))
    durability = request.durability
    strict = request.zone_checking is ZoneChecking.STRICT
    taken: dict[DeviceId, int] = {}  # bytes this plan has put on each device (the index does not know yet)
    bricks: list[Brick] = []
    for set_index in range(sets):
        origin = hash64(f"{request.volume}/{set_index}")
        used_nodes: set[NodeId] = set()
        used_zones: set[int] = set()
        for position in range(durability.set_size):
            is_arbiter = (
                isinstance(durability, Replicate) and durability.arbiter and position == durability.set_size - 1
            )
            size = arbiter_size if is_arbiter else brick_size
            index = arbiter if is_arbiter else data
            top = index.topology
            nodes = {top.node_key_of[n] for n in used_nodes if n in top.node_key_of}
            slots = {top.slot_of[d]: b for d, b in taken.items() if d in top.slot_of}
            slot = index.best(size, origin, nodes, used_zones, strict=strict, taken=slots)
            if slot is None:
                shortfall = index.shortfall(request.durability, size, nodes, used_zones, strict=strict, taken=slots)
                if request.tag_match is not None:
                    shortfall += f" (devices matching {request.tag_match} only)"
                raise NoDeviceWithSpace(shortfall)
            node, device = top.nodes[slot], top.devices[slot]
            taken[device.id] = taken.get(device.id, 0) + size
            used_nodes.add(node.id)
            used_zones.add(node.zone)
            bricks.append(
                Brick(
                    id=BrickId(derive_id(request.volume, str(set_index), str(position))),
                    node=node.id,
                    device=device.id,
                    size=size,
                    set_index=set_index,
                    arbiter=is_arbiter,
                )
            )
    return Plan(volume=request.volume, brick_size=brick_size, bricks=tuple(bricks))
