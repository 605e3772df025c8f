"""Desired state in memory: the clusters and volumes this daemon knows, and the codec of their records.

The compacted state topic holds one record per object (``cluster/<id>``, ``volume/<id>``,
``snapshot/<id>``; a tombstone deletes). A daemon replays the topic into a ``DesiredState`` and applies its own changes
after each transaction commits. Device usage is derived from the volumes' bricks and kept
incrementally (``allocator.DeviceUsage``, which also keeps the placement index current), so the
allocator never scans all volumes.

Memory: a decoded volume shares what it has in common with other volumes (node, device and cluster
ids, sizes, durability) with one canonical object each, instead of holding its own copies; at
100,000 volumes that is most of the difference between ~1.5 KiB and ~1 KiB per volume. Each
canonical value is counted by the volumes holding it and dropped with the last one, so a daemon that
sees a million distinct sizes come and go does not keep them all.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

from pydantic import TypeAdapter

from provisioner.domain import Cluster, ClusterId, Snapshot, SnapshotId, Volume, VolumeId
from provisioner.errors import UnknownCluster
from provisioner.planning.index import DeviceUsage

_CLUSTER = TypeAdapter(Cluster)
_VOLUME = TypeAdapter(Volume)
_SNAPSHOT = TypeAdapter(Snapshot)

CLUSTER_PREFIX = "cluster/"
VOLUME_PREFIX = "volume/"
SNAPSHOT_PREFIX = "snapshot/"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StateChange:
    """One record for the state topic: ``value`` None is a tombstone."""

    key: str
    value: bytes | None

    @staticmethod
    def put_cluster(cluster: Cluster) -> StateChange:
        return StateChange(CLUSTER_PREFIX + cluster.id, _CLUSTER.dump_json(cluster))

    @staticmethod
    def put_volume(volume: Volume) -> StateChange:
        return StateChange(VOLUME_PREFIX + volume.id, _VOLUME.dump_json(volume))

    @staticmethod
    def delete_volume(volume: VolumeId) -> StateChange:
        return StateChange(VOLUME_PREFIX + volume, None)

    @staticmethod
    def put_snapshot(snapshot: Snapshot) -> StateChange:
        return StateChange(SNAPSHOT_PREFIX + snapshot.id, _SNAPSHOT.dump_json(snapshot))

    @staticmethod
    def delete_snapshot(snapshot: SnapshotId) -> StateChange:
        return StateChange(SNAPSHOT_PREFIX + snapshot, None)


class UnknownRecord(ValueError):
    pass


class _Canon:
    """Canonical copies of values many volumes hold, each counted by its holders."""

    def __init__(self) -> None:
        self._copies: dict[object, object] = {}
        self._holders: dict[object, int] = {}

    def take(self, value: T) -> T:
        canonical = self._copies.setdefault(value, value)
        self._holders[value] = self._holders.get(value, 0) + 1
        return canonical  # type: ignore[return-value]

    def drop(self, value: object) -> None:
        left = self._holders[value] - 1
        if left:
            self._holders[value] = left
        else:
            del self._holders[value], self._copies[value]

    def __len__(self) -> int:
        return len(self._copies)


class DesiredState:
    def __init__(self) -> None:
        self.clusters: dict[ClusterId, Cluster] = {}
        self.volumes: dict[VolumeId, Volume] = {}
        self._names: dict[ClusterId, dict[str, VolumeId]] = {}
        self._usage: dict[ClusterId, DeviceUsage] = {}
        self._shared = _Canon()
        self._alternates: dict[str, tuple[str, ...]] = {}  # manage hostname -> the node's further ones
        self.snapshots: dict[SnapshotId, Snapshot] = {}

    def apply(self, change: StateChange) -> None:
        """Apply one record; raises UnknownRecord or a validation error for a record we cannot read."""
        if change.key.startswith(CLUSTER_PREFIX):
            if change.value is None:
                self._forget_hosts(self.clusters.pop(ClusterId(change.key[len(CLUSTER_PREFIX) :]), None))
            else:
                cluster = _CLUSTER.validate_json(change.value)
                self._forget_hosts(self.clusters.get(cluster.id))
                self.clusters[cluster.id] = cluster
                self._alternates |= {n.manage: n.manage_alternates for n in cluster.nodes if n.manage_alternates}
        elif change.key.startswith(VOLUME_PREFIX):
            volume_id = VolumeId(change.key[len(VOLUME_PREFIX) :])
            if change.value is None:
                self._forget(volume_id)
            else:
                self._put(volume_id, self._compact(_VOLUME.validate_json(change.value)))
        elif change.key.startswith(SNAPSHOT_PREFIX):
            snapshot_id = SnapshotId(change.key[len(SNAPSHOT_PREFIX) :])
            if change.value is None:
                self.snapshots.pop(snapshot_id, None)
            else:
                self.snapshots[snapshot_id] = _SNAPSHOT.validate_json(change.value)
        else:
            raise UnknownRecord(f"state record with unknown key {change.key!r}")

    def _compact(self, volume: Volume) -> Volume:
        """Swap the volume's common values for their canonical copies. The volume was decoded a
        moment ago and nothing else holds it yet, so its frozen fields are set in place. Every value
        taken here is dropped by ``_release`` when the volume leaves the state."""
        share = self._shared.take
        for brick in volume.bricks:
            object.__setattr__(brick, "node", share(brick.node))
            object.__setattr__(brick, "device", share(brick.device))
            object.__setattr__(brick, "size", share(brick.size))
        object.__setattr__(volume, "cluster", share(volume.cluster))
        object.__setattr__(volume, "size", share(volume.size))
        object.__setattr__(volume, "durability", share(volume.durability))
        return volume

    def _put(self, volume_id: VolumeId, volume: Volume) -> None:
        old = self.volumes.get(volume_id)
        if old is not None and (old.id, old.cluster, old.bricks) == (volume.id, volume.cluster, volume.bricks):
            # A status change (creating -> online) or new labels: the bricks, and so the usage, stay.
            self._names[old.cluster].pop(old.name, None)
            self.volumes[volume_id] = volume
            self._names[volume.cluster][volume.name] = volume.id
            self._release(old)
            return
        self._forget(volume_id)
        self.volumes[volume.id] = volume
        self._names.setdefault(volume.cluster, {})[volume.name] = volume.id
        usage = self.usage(volume.cluster)
        for brick in volume.bricks:
            usage.add(brick.device, brick.footprint)

    def _forget(self, volume_id: VolumeId) -> None:
        volume = self.volumes.pop(volume_id, None)
        if volume is None:
            return
        self._names[volume.cluster].pop(volume.name, None)
        usage = self.usage(volume.cluster)
        for brick in volume.bricks:
            usage.add(brick.device, -brick.footprint)
        self._release(volume)

    def _release(self, volume: Volume) -> None:
        drop = self._shared.drop
        for brick in volume.bricks:
            drop(brick.node)
            drop(brick.device)
            drop(brick.size)
        drop(volume.cluster)
        drop(volume.size)
        drop(volume.durability)

    @property
    def shared_values(self) -> int:
        """How many canonical values the volumes hold between them (for tests and memory checks)."""
        return len(self._shared)

    def _forget_hosts(self, cluster: Cluster | None) -> None:
        for node in cluster.nodes if cluster is not None else ():
            self._alternates.pop(node.manage, None)

    def manage_alternates(self, host: str) -> tuple[str, ...]:
        """The further manage hostnames of the node whose first is ``host`` (``executor.alternates``)."""
        return self._alternates.get(host, ())

    def usage(self, cluster: ClusterId) -> DeviceUsage:
        """Bytes taken per device of ``cluster`` (a read-only mapping; pass it to ``plan_volume``)."""
        usage = self._usage.get(cluster)
        if usage is None:
            usage = self._usage[cluster] = DeviceUsage()
        return usage

    def require_cluster(self, cluster_id: str) -> Cluster:
        """The cluster's topology; UnknownCluster (naming the fix) when none was loaded."""
        cluster = self.clusters.get(ClusterId(cluster_id))
        if cluster is None:
            raise UnknownCluster(f"cluster {cluster_id} has no topology; load one with `provisioner topology load`")
        return cluster

    def volume_named(self, cluster: ClusterId, name: str) -> Volume | None:
        volume_id = self._names.get(cluster, {}).get(name)
        return self.volumes.get(volume_id) if volume_id else None

    def volume_by(self, cluster: ClusterId, volume_id: str | None, name: str | None) -> Volume | None:
        """The volume of ``cluster`` a request names by id, else by name (None when it has none)."""
        volume = self.volumes.get(VolumeId(volume_id)) if volume_id else self.volume_named(cluster, name or "")
        return volume if volume is not None and volume.cluster == cluster else None

    def snapshot_by(self, cluster: ClusterId, snapshot_id: str | None, name: str | None) -> Snapshot | None:
        """The snapshot of ``cluster`` a request names by id, else by name."""
        found = self.snapshots.get(SnapshotId(snapshot_id)) if snapshot_id else self.snapshot_named(cluster, name or "")
        return found if found is not None and found.cluster == cluster else None

    def snapshot_named(self, cluster: ClusterId, name: str) -> Snapshot | None:
        """Snapshots are few per volume; a scan is cheaper than keeping another index current."""
        return next((s for s in self.snapshots.values() if s.cluster == cluster and s.name == name), None)

    def snapshots_of(self, volume: VolumeId) -> list[Snapshot]:
        return sorted((s for s in self.snapshots.values() if s.volume == volume), key=lambda s: s.name)

    def volumes_of(self, cluster: ClusterId) -> Iterator[Volume]:
        return (v for v in self.volumes.values() if v.cluster == cluster)
