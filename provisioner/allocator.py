"""Brick placement: a pure function from (request, cluster, usage) to a plan.

No I/O, no clock, no randomness beyond the request id: the same inputs always give the same plan,
so a redelivered request re-plans identically and node steps can be matched by brick id.

Rules, in order of strength:
1. never two bricks of one set on one node (hard);
2. zones: with ``strict`` zone checking every brick of a set is in a different zone; otherwise
   bricks prefer zones not yet used by their set;
3. capacity-weighted: the device with the most free bytes wins, so no device fills while others
   stay empty; a hash of (request, set, device) breaks ties so equal devices share the load;
4. a volume too large for one brick is split into 2, 4, 8, ... distribute sets within the
   min/max brick size and the brick count limit (Heketi's rule).
Failures name the specific shortfall instead of a bare "no space".
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from provisioner.domain import (
    Brick,
    BrickId,
    Cluster,
    Device,
    DeviceId,
    Disperse,
    Durability,
    Node,
    Replicate,
    VolumeId,
    derive_id,
)
from provisioner.errors import NoCapacity

Usage = Mapping[DeviceId, int]
"""Bytes already taken on each device (devices absent from the mapping are empty)."""

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


def _tiebreak(volume: VolumeId, set_index: int, device: DeviceId) -> bytes:
    return hashlib.blake2b(f"{volume}/{set_index}/{device}".encode(), digest_size=8).digest()


def plan_volume(request: PlacementRequest, cluster: Cluster, usage: Usage, limits: Limits = Limits()) -> Plan:
    """Place every brick of the volume or raise NoCapacity with the most specific reason."""
    durability = request.durability
    _check_nodes(request, cluster)
    last_failure: NoCapacity | None = None
    sets = 1
    while True:
        share = _align(-(-request.size // (sets * durability.data_bricks)))
        if sets > 1 and share < limits.min_brick:
            raise last_failure or NoCapacity(
                f"volume of {request.size} bytes would need bricks below the minimum brick size {limits.min_brick}",
                reason="MinimumBrickSize",
            )
        if sets * durability.set_size > limits.max_bricks:
            raise last_failure or NoCapacity(
                f"volume would need more than {limits.max_bricks} bricks", reason="TooManyBricks"
            )
        # A volume smaller than one minimum brick still gets a brick of the minimum size.
        brick_size = max(share, limits.min_brick)
        if brick_size <= limits.max_brick:
            try:
                return _place(request, cluster, usage, limits, sets=sets, brick_size=brick_size)
            except NoCapacity as failure:
                last_failure = failure
        sets *= 2


def _check_nodes(request: PlacementRequest, cluster: Cluster) -> None:
    usable = [n for n in cluster.nodes if n.enabled and any(d.enabled for d in n.devices)]
    need = request.durability.set_size
    if len(usable) < need:
        raise NoCapacity(
            f"cluster {cluster.id} has {len(usable)} usable node(s); {need} are needed for one brick set",
            reason="NotEnoughNodes",
        )
    if request.zone_checking is ZoneChecking.STRICT:
        zones = {n.zone for n in usable}
        if len(zones) < need:
            raise NoCapacity(
                f"cluster {cluster.id} has {len(zones)} zone(s); strict zone checking needs {need}",
                reason="NotEnoughZones",
            )


def _place(
    request: PlacementRequest, cluster: Cluster, usage: Usage, limits: Limits, *, sets: int, brick_size: int
) -> Plan:
    free: dict[DeviceId, int] = {}
    candidates: list[tuple[Node, Device]] = []
    for node in cluster.nodes:
        if not node.enabled:
            continue
        for device in node.devices:
            if device.enabled:
                free[device.id] = device.capacity - usage.get(device.id, 0)
                candidates.append((node, device))

    arbiter_size = _align(max(limits.min_brick, brick_size // limits.arbiter_ratio))
    durability = request.durability
    bricks: list[Brick] = []
    for set_index in range(sets):
        used_nodes: set[str] = set()
        used_zones: set[int] = set()
        for position in range(durability.set_size):
            is_arbiter = (
                isinstance(durability, Replicate) and durability.arbiter and position == durability.set_size - 1
            )
            size = arbiter_size if is_arbiter else brick_size
            best = _best_device(
                request,
                candidates,
                free,
                set_index=set_index,
                size=size,
                used_nodes=used_nodes,
                used_zones=used_zones,
            )
            if best is None:
                raise NoCapacity(
                    _shortfall(request, candidates, free, size=size, used_nodes=used_nodes, used_zones=used_zones),
                    reason="NoDeviceWithSpace",
                )
            node, device = best
            free[device.id] -= size
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


def _best_device(
    request: PlacementRequest,
    candidates: list[tuple[Node, Device]],
    free: dict[DeviceId, int],
    *,
    set_index: int,
    size: int,
    used_nodes: set[str],
    used_zones: set[int],
) -> tuple[Node, Device] | None:
    strict = request.zone_checking is ZoneChecking.STRICT
    best: tuple[Node, Device] | None = None
    best_key: tuple[bool, int, bytes] | None = None
    for node, device in candidates:
        if node.id in used_nodes or free[device.id] < size:
            continue
        zone_used = node.zone in used_zones
        if strict and zone_used:
            continue
        key = (zone_used, -free[device.id], _tiebreak(request.volume, set_index, device.id))
        if best_key is None or key < best_key:
            best, best_key = (node, device), key
    return best


def _shortfall(
    request: PlacementRequest,
    candidates: list[tuple[Node, Device]],
    free: dict[DeviceId, int],
    *,
    size: int,
    used_nodes: set[str],
    used_zones: set[int],
) -> str:
    others = [(n, d) for n, d in candidates if n.id not in used_nodes]
    if request.zone_checking is ZoneChecking.STRICT:
        others = [(n, d) for n, d in others if n.zone not in used_zones]
    largest = max((free[d.id] for _, d in others), default=0)
    nodes_with_room = len({n.id for n, d in candidates if free[d.id] >= size})
    kind = "disperse" if isinstance(request.durability, Disperse) else request.durability.type
    return (
        f"no device with {size} bytes free on another node for a {kind} set of "
        f"{request.durability.set_size}: {nodes_with_room} node(s) have room, largest free on the "
        f"remaining nodes is {largest} bytes"
    )
