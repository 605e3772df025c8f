"""Snapshot requests: create, delete and list, with the guarantees of every other request.

A snapshot is recorded as ``creating`` in the state topic before gluster takes it, so a crash at
any instant leaves a record naming it; a redelivered request finds the snapshot (its description
carries our id) and finishes. A create that fails for good deletes what gluster may have taken
and drops the record. A delete records ``deleting`` first; deleting one that is gone succeeds with
``existed: false``. Listing reads desired state. Snapshot requests are ordered with the requests of
their volume (``dispatch.keys_of``), so a volume is never deleted under a snapshot being taken.
"""

from __future__ import annotations

import dataclasses

from provisioner.delivery.outcome import Outcome
from provisioner.domain import (
    Cluster,
    ClusterId,
    RequestId,
    Snapshot,
    SnapshotId,
    SnapshotStatus,
    Volume,
    VolumeStatus,
    derive_id,
    snapshot_name_for,
)
from provisioner.errors import ProvisionerError, SnapshotNameTaken, SnapshotNotFound, VolumeConflict, VolumeNotFound
from provisioner.events import models, results
from provisioner.handling.operation import run
from provisioner.handling.request import Request, Storage
from provisioner.handling.results import succeeded
from provisioner.state import StateChange
from provisioner.storage.snapshots import SnapshotOperations, thin_only


def snapshot_out(snapshot: Snapshot, volume_name: str) -> results.SnapshotOut:
    return results.SnapshotOut(
        snapshot_id=snapshot.id,
        name=snapshot.name,
        cluster=snapshot.cluster,
        volume_id=snapshot.volume,
        volume=volume_name,
    )


def named_volume(storage: Storage, cluster: ClusterId, volume_id: str | None, name: str | None) -> Volume:
    """The volume a request names by id or by name, in this cluster; VolumeNotFound otherwise."""
    volume = storage.state.volume_by(cluster, volume_id, name)
    if volume is None:
        raise VolumeNotFound(f"no volume {volume_id or name} in cluster {cluster}")
    return volume


class SnapshotRequests:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._nodes = SnapshotOperations(storage.ops)

    async def create(self, request: Request, data: models.CreateSnapshot) -> Outcome:
        storage = self._storage
        cluster = storage.state.require_cluster(data.cluster)
        volume = named_volume(storage, cluster.id, data.volume_id, data.volume)
        snapshot_id = SnapshotId(data.snapshot_id or derive_id("snapshot", request.event.id))
        name = data.name or snapshot_name_for(snapshot_id)
        existing = storage.state.snapshots.get(snapshot_id)
        if existing is not None and (existing.name, existing.volume) != (name, volume.id):
            raise SnapshotNameTaken(f"snapshot {snapshot_id} exists as {existing.name} of volume {existing.volume}")
        if existing is not None and existing.status is SnapshotStatus.ONLINE:
            return _created(request, existing, volume)  # the same request again: the same answer
        holder = storage.state.snapshot_named(cluster.id, name)
        if holder is not None and holder.id != snapshot_id:
            raise SnapshotNameTaken(f"snapshot name {name} is taken by snapshot {holder.id}")
        if volume.status is not VolumeStatus.ONLINE:
            raise VolumeConflict(f"volume {volume.name} is {volume.status.value}; snapshot it once it is online")
        thin_only(cluster, volume)
        snapshot = Snapshot(
            id=snapshot_id,
            name=name,
            cluster=cluster.id,
            volume=volume.id,
            status=SnapshotStatus.CREATING,
            request=RequestId(request.event.id),
        )
        return await run(_Create(self._nodes, request, cluster, volume, snapshot))

    async def delete(self, request: Request, data: models.DeleteSnapshot) -> Outcome:
        storage = self._storage
        cluster = storage.state.require_cluster(data.cluster)
        snapshot = storage.state.snapshot_by(cluster.id, data.snapshot_id, data.name)
        if snapshot is None:
            gone = results.SnapshotDeleted(
                request_id=request.event.id,
                cluster=cluster.id,
                snapshot_id=data.snapshot_id,
                name=data.name,
                existed=False,
            )
            return succeeded(
                request.event, gone, key=data.snapshot_id or cluster.id, subject=None, source=request.source
            )
        volume = storage.state.volumes.get(snapshot.volume)
        if volume is None:
            raise SnapshotNotFound(f"snapshot {snapshot.name} names volume {snapshot.volume}, which has no record")
        deleting = dataclasses.replace(snapshot, status=SnapshotStatus.DELETING)
        await request.retrying(
            lambda: request.intent.record([StateChange.put_snapshot(deleting)]), what=f"record {snapshot.name}"
        )
        existed = await request.retrying(
            lambda: self._nodes.delete(cluster, volume, snapshot), what=f"delete snapshot {snapshot.name}"
        )
        done = results.SnapshotDeleted(
            request_id=request.event.id,
            cluster=cluster.id,
            snapshot_id=snapshot.id,
            name=snapshot.name,
            existed=existed,
        )
        changes = (StateChange.delete_snapshot(snapshot.id),)
        return succeeded(
            request.event, done, key=snapshot.id, subject=snapshot.id, source=request.source, changes=changes
        )

    def list(self, request: Request, data: models.ListSnapshots) -> Outcome:
        storage = self._storage
        cluster = storage.state.require_cluster(data.cluster)
        if data.volume_id or data.volume:
            volume = named_volume(storage, cluster.id, data.volume_id, data.volume)
            chosen = storage.state.snapshots_of(volume.id)
        else:
            chosen = sorted(
                (s for s in storage.state.snapshots.values() if s.cluster == cluster.id), key=lambda s: s.name
            )
        names = {v.id: v.name for v in storage.state.volumes_of(cluster.id)}
        listed = results.SnapshotsListed(
            request_id=request.event.id,
            cluster=cluster.id,
            snapshots=[snapshot_out(s, names.get(s.volume, "")) for s in chosen if s.status is SnapshotStatus.ONLINE],
        )
        return succeeded(request.event, listed, key=cluster.id, subject=None, source=request.source)


def _created(request: Request, snapshot: Snapshot, volume: Volume, changes: tuple[StateChange, ...] = ()) -> Outcome:
    data = results.SnapshotCreated(request_id=request.event.id, snapshot=snapshot_out(snapshot, volume.name))
    return succeeded(request.event, data, key=snapshot.id, subject=snapshot.id, source=request.source, changes=changes)


class _Create:
    """``handling.operation``'s four steps for one snapshot."""

    def __init__(
        self, nodes: SnapshotOperations, request: Request, cluster: Cluster, volume: Volume, snapshot: Snapshot
    ) -> None:
        self._nodes = nodes
        self._request = request
        self._cluster = cluster
        self._volume = volume
        self._snapshot = snapshot
        self.volume_id: str | None = volume.id

    async def record(self) -> None:
        request = self._request
        await request.retrying(
            lambda: request.intent.record([StateChange.put_snapshot(self._snapshot)]),
            what=f"record {self._snapshot.name}",
        )

    async def execute(self) -> None:
        await self._request.retrying(
            lambda: self._nodes.create(self._cluster, self._volume, self._snapshot),
            what=f"snapshot {self._volume.name} as {self._snapshot.name}",
        )

    async def roll_back(self, failure: ProvisionerError) -> tuple[StateChange, ...]:
        if isinstance(failure, SnapshotNameTaken):  # not ours: never delete it
            return (StateChange.delete_snapshot(self._snapshot.id),)
        await self._request.rollback(
            lambda: self._nodes.delete(self._cluster, self._volume, self._snapshot),
            what=f"remove snapshot {self._snapshot.name}",
        )
        return (StateChange.delete_snapshot(self._snapshot.id),)

    async def finish(self, done: None) -> Outcome:
        online = dataclasses.replace(self._snapshot, status=SnapshotStatus.ONLINE)
        return _created(self._request, online, self._volume, changes=(StateChange.put_snapshot(online),))
