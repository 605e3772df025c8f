"""Desired state in memory: the clusters and volumes this daemon knows, and the codec of their records.

The compacted state topic holds one record per object (``cluster/<id>``, ``volume/<id>``; a
tombstone deletes). A daemon replays the topic into a ``DesiredState`` and applies its own changes
after each transaction commits. Device usage is derived from the volumes' bricks and kept
incrementally, so the allocator never scans all volumes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

from pydantic import TypeAdapter

from provisioner.domain import Cluster, ClusterId, DeviceId, Volume, VolumeId

_CLUSTER = TypeAdapter(Cluster)
_VOLUME = TypeAdapter(Volume)

CLUSTER_PREFIX = "cluster/"
VOLUME_PREFIX = "volume/"


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


class UnknownRecord(ValueError):
    pass


class DesiredState:
    def __init__(self) -> None:
        self.clusters: dict[ClusterId, Cluster] = {}
        self.volumes: dict[VolumeId, Volume] = {}
        self._names: dict[tuple[ClusterId, str], VolumeId] = {}
        self._usage: dict[ClusterId, dict[DeviceId, int]] = defaultdict(dict)

    def apply(self, change: StateChange) -> None:
        """Apply one record; raises UnknownRecord or a validation error for a record we cannot read."""
        if change.key.startswith(CLUSTER_PREFIX):
            if change.value is None:
                self.clusters.pop(ClusterId(change.key[len(CLUSTER_PREFIX) :]), None)
            else:
                cluster = _CLUSTER.validate_json(change.value)
                self.clusters[cluster.id] = cluster
        elif change.key.startswith(VOLUME_PREFIX):
            volume_id = VolumeId(change.key[len(VOLUME_PREFIX) :])
            self._forget(volume_id)
            if change.value is not None:
                self._remember(_VOLUME.validate_json(change.value))
        else:
            raise UnknownRecord(f"state record with unknown key {change.key!r}")

    def _remember(self, volume: Volume) -> None:
        self.volumes[volume.id] = volume
        self._names[(volume.cluster, volume.name)] = volume.id
        usage = self._usage[volume.cluster]
        for brick in volume.bricks:
            usage[brick.device] = usage.get(brick.device, 0) + brick.size

    def _forget(self, volume_id: VolumeId) -> None:
        volume = self.volumes.pop(volume_id, None)
        if volume is None:
            return
        self._names.pop((volume.cluster, volume.name), None)
        usage = self._usage[volume.cluster]
        for brick in volume.bricks:
            usage[brick.device] = usage.get(brick.device, 0) - brick.size

    def usage(self, cluster: ClusterId) -> dict[DeviceId, int]:
        return self._usage[cluster]

    def volume_named(self, cluster: ClusterId, name: str) -> Volume | None:
        volume_id = self._names.get((cluster, name))
        return self.volumes.get(volume_id) if volume_id else None

    def volumes_of(self, cluster: ClusterId) -> Iterator[Volume]:
        return (v for v in self.volumes.values() if v.cluster == cluster)
