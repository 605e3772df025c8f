"""Planning the growth of a volume: whole new brick sets of the volume's existing brick size.

Pure, like the allocator it builds on: the new sets are placed by ``plan_volume`` with the brick
size pinned to the volume's, then renumbered after the existing sets. Brick ids derive from the
volume id and the set position, so a redelivered request plans the same bricks.
"""

from __future__ import annotations

import dataclasses

from provisioner.domain import Brick, BrickId, Cluster, Volume, VolumeId, derive_id
from provisioner.errors import TooManyBricks
from provisioner.planning.allocator import Limits, PlacementRequest, ZoneChecking, plan_volume
from provisioner.planning.index import Usage
from provisioner.planning.tags import TagMatch


def data_brick_size(volume: Volume) -> int:
    return max(b.size for b in volume.bricks if not b.arbiter)


def plan_expansion(
    volume: Volume, size: int, cluster: Cluster, usage: Usage, limits: Limits, *, zones: ZoneChecking
) -> tuple[Brick, ...]:
    """The bricks to add so the volume holds at least ``size`` bytes (none when it already does)."""
    per_set = data_brick_size(volume) * volume.durability.data_bricks
    have_sets = 1 + max(b.set_index for b in volume.bricks)
    capacity = have_sets * per_set
    if size <= capacity:
        return ()
    add_sets = -(-(size - capacity) // per_set)
    brick = data_brick_size(volume)
    pinned = dataclasses.replace(limits, min_brick=brick, max_brick=brick)
    if len(volume.bricks) + add_sets * volume.durability.set_size > limits.max_bricks:
        raise TooManyBricks(
            f"growing {volume.name} to {size} bytes needs {add_sets} more set(s), beyond {limits.max_bricks} bricks",
        )
    taken = dict(usage)
    added: list[Brick] = []
    for number in range(have_sets, have_sets + add_sets):  # one set at a time, each seeing the last
        plan = plan_volume(
            PlacementRequest(
                volume=VolumeId(derive_id(volume.id, "set", str(number))),
                size=per_set,
                durability=volume.durability,
                zone_checking=zones,
                tag_match=TagMatch.parse(volume.device_tag_match) if volume.device_tag_match else None,
            ),
            cluster,
            taken,
            pinned,
        )
        for position, b in enumerate(plan.bricks):
            added.append(
                dataclasses.replace(b, id=BrickId(derive_id(volume.id, str(number), str(position))), set_index=number)
            )
            taken[b.device] = taken.get(b.device, 0) + b.size
    return tuple(added)
