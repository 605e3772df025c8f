"""Clone requests: a new volume of ours with the data of a snapshot, or of a volume as it is now.

The clone is recorded as ``creating`` before any node work, with bricks of its own ids on the
origin's devices (brick ``i`` from origin brick ``i``), each living in its origin brick's thin pool
and so taking no room from the device until written. A clone of a volume takes a temporary gluster
snapshot first (the clone record names it, so a crash leaves it owned) and deletes it once the
clone is online; a clone of a snapshot leaves the snapshot alone. The node steps are in
``storage.snapshots``; then the gluster volume is created like any new one. Rollback removes the
clone's volume and bricks, and the temporary snapshot.
"""

from __future__ import annotations

import dataclasses

from provisioner import metrics
from provisioner.delivery.outcome import Outcome
from provisioner.domain import (
    Brick,
    BrickId,
    CloneSource,
    Cluster,
    RequestId,
    Snapshot,
    SnapshotId,
    SnapshotStatus,
    Volume,
    VolumeId,
    VolumeStatus,
    derive_id,
    volume_name_for,
)
from provisioner.errors import ProvisionerError, SnapshotNotFound, VolumeConflict, VolumeNameTaken
from provisioner.events import models, results
from provisioner.handling.operation import run
from provisioner.handling.request import Request, Storage
from provisioner.handling.results import progress, succeeded, volume_out
from provisioner.handling.snapshots import named_volume
from provisioner.state import StateChange
from provisioner.storage.snapshots import SnapshotOperations, thin_only


async def clone(storage: Storage, request: Request, data: models.CloneVolume) -> Outcome:
    """Refuse what cannot be cloned before anything is recorded, then run the clone."""
    state = storage.state
    cluster = state.require_cluster(data.cluster)
    clone_id = VolumeId(data.volume_id or derive_id("volume", request.event.id))
    name = data.name or volume_name_for(clone_id)
    existing = state.volumes.get(clone_id)
    if existing is not None and (existing.name != name or existing.clone is None):
        raise VolumeConflict(f"volume {clone_id} exists as {existing.name}, not as a clone named {name}")
    if existing is not None and existing.status is VolumeStatus.ONLINE:
        assert existing.clone is not None
        return _cloned(request, cluster, existing, existing.clone)  # the same request again
    if existing is not None and existing.status is not VolumeStatus.CREATING:
        raise VolumeConflict(f"volume {clone_id} is {existing.status.value}")
    holder = state.volume_named(cluster.id, name)
    if holder is not None and holder.id != clone_id:
        raise VolumeNameTaken(f"volume name {name} is taken by volume {holder.id}")
    if existing is not None:
        assert existing.clone is not None
        source = existing.clone
        origin = state.volumes.get(source.origin)
        if origin is None:
            raise VolumeConflict(f"clone {name} is from volume {source.origin}, which has no record any more")
    elif data.from_snapshot_id or data.from_snapshot:
        snapshot = state.snapshot_by(cluster.id, data.from_snapshot_id, data.from_snapshot)
        if snapshot is None or snapshot.status is not SnapshotStatus.ONLINE:
            raise SnapshotNotFound(f"no snapshot {data.from_snapshot_id or data.from_snapshot} in cluster {cluster.id}")
        origin = named_volume(storage, cluster.id, snapshot.volume, None)
        source = CloneSource(snapshot=snapshot.name, origin=origin.id)
    else:
        origin = named_volume(storage, cluster.id, data.from_volume_id, data.from_volume)
        source = CloneSource(snapshot=f"clone_{clone_id}", origin=origin.id, temporary=True)
    if origin.status is not VolumeStatus.ONLINE or origin.replacing:
        raise VolumeConflict(f"volume {origin.name} is being changed; clone it once it is online")
    thin_only(cluster, origin)
    made = existing or planned_clone(origin, clone_id, name, source, gid=data.gid, request=request.event.id)
    return await run(_Clone(storage, request, cluster, origin, made))


def planned_clone(
    origin: Volume, clone_id: VolumeId, name: str, source: CloneSource, *, gid: int | None, request: str
) -> Volume:
    """The clone's record: brick ``i`` on origin brick ``i``'s device, in its pool, with an id of its own."""
    bricks = tuple(
        Brick(
            id=BrickId(derive_id(clone_id, "brick", str(i))),
            node=b.node,
            device=b.device,
            size=b.size,
            set_index=b.set_index,
            arbiter=b.arbiter,
            pool=b.pool_brick,
        )
        for i, b in enumerate(origin.bricks)
    )
    return Volume(
        id=clone_id,
        name=name,
        cluster=origin.cluster,
        size=origin.size,
        durability=origin.durability,
        bricks=bricks,
        status=VolumeStatus.CREATING,
        gid=gid if gid is not None else origin.gid,
        options=origin.options,
        request=RequestId(request),
        snapshot_factor=origin.snapshot_factor,
        device_tag_match=origin.device_tag_match,
        clone=source,
    )


def _cloned(
    request: Request, cluster: Cluster, volume: Volume, source: CloneSource, changes: tuple[StateChange, ...] = ()
) -> Outcome:
    data = results.VolumeCloned(
        request_id=request.event.id,
        volume=volume_out(cluster, volume),
        from_snapshot=source.snapshot,
        from_volume_id=source.origin,
    )
    return succeeded(request.event, data, key=volume.id, subject=volume.id, source=request.source, changes=changes)


class _Clone:
    def __init__(self, storage: Storage, request: Request, cluster: Cluster, origin: Volume, made: Volume) -> None:
        assert made.clone is not None
        self._storage = storage
        self._nodes = SnapshotOperations(storage.ops)
        self._request = request
        self._cluster = cluster
        self._origin = origin
        self._made = made
        self._source = made.clone
        self.volume_id: str | None = made.id

    def _temporary(self) -> Snapshot:
        """The snapshot a clone of a volume takes first (not a record of its own: the clone's names it)."""
        return Snapshot(
            id=SnapshotId(derive_id(self._made.id, "snapshot")),
            name=self._source.snapshot,
            cluster=self._cluster.id,
            volume=self._origin.id,
        )

    async def record(self) -> None:
        if self._made.id not in self._storage.state.volumes:  # else: resumed from its record
            await self._storage.record(self._request, self._made)

    async def execute(self) -> None:
        storage, request, cluster, origin, made = self._storage, self._request, self._cluster, self._origin, self._made
        nodes = self._nodes
        if self._source.temporary:
            await request.retrying(
                lambda: nodes.create(cluster, origin, self._temporary()), what=f"snapshot {origin.name} for {made.name}"
            )
        info = await request.retrying(lambda: nodes.info(cluster, origin, self._source.snapshot), what="snapshot info")
        if info is None:
            raise SnapshotNotFound(f"gluster has no snapshot {self._source.snapshot} to clone {made.name} from")

        async def bricks() -> None:
            # Once the clone's gluster volume exists, its bricks carry its marks: never strip them again.
            if await storage.ops.volume_info(cluster, made) is None:
                with metrics.step("brick_create"):
                    await nodes.clone_bricks(cluster, origin, made, info)

        await request.retrying(bricks, what=f"clone the bricks of {origin.name} for {made.name}")
        ready = progress(
            request.event, made, "bricks_ready", f"{len(made.bricks)} bricks cloned", source=request.source
        )
        await request.retrying(lambda: request.intent.progress(ready, made.id), what="progress")
        await request.retrying(lambda: storage.ops.create_volume(cluster, made), what=f"create {made.name}")
        if self._source.temporary:
            await request.retrying(
                lambda: nodes.delete(cluster, origin, self._temporary()), what=f"drop the snapshot of {made.name}"
            )

    async def roll_back(self, failure: ProvisionerError) -> tuple[StateChange, ...]:
        rollback = self._request.rollback
        with metrics.step("rollback"):
            await self._storage.remove(rollback, self._cluster, self._made)
            if self._source.temporary:
                await rollback(
                    lambda: self._nodes.delete(self._cluster, self._origin, self._temporary()),
                    what=f"drop the snapshot of {self._made.name}",
                )
        return (StateChange.delete_volume(self._made.id),)

    async def finish(self, done: None) -> Outcome:
        online = dataclasses.replace(self._made, status=VolumeStatus.ONLINE)
        return _cloned(self._request, self._cluster, online, self._source, changes=(StateChange.put_volume(online),))
