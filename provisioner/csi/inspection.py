"""The read-only node calls: NodeGetVolumeStats, NodeExpandVolume, NodeGetVolumeHealth.

They look and never change anything, so they take no per-volume lock and mount nothing: a stale
mount is reported (health: INACCESSIBLE ``StaleMount``; stats: FAILED_PRECONDITION), and repaired
by the next NodeStage/NodePublish (``provisioner.csi.node``). They find a volume by id through the
state record NodeStage wrote and check it against the mount table, so a path that holds another
volume, or cannot hold one of ours at all (relative, foreign), answers NOT_FOUND -- the spec's
code for "volume does not exist at the specified path", which csi-sanity checks with a relative
``some/path``. Missing ids and paths are still INVALID_ARGUMENT.

NodeExpandVolume has nothing to do: a gluster volume grows online on the servers (add-brick), and
every client sees the new size at once. It answers with the size the mount shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from provisioner.csi import attributes, metrics, validation
from provisioner.csi.errors import FailedPrecondition, InvalidArgument, NotFound
from provisioner.csi.mounter import Mounter, PathState, Usage
from provisioner.csi.paths import checked_path
from provisioner.csi.proto import csi_pb2
from provisioner.csi.state import StagedVolume, StateStore

STALE_MOUNT = "StaleMount"
MOUNT_HUNG = "MountHung"
NOT_MOUNTED = "NotMounted"
HEALTH_REASONS = (STALE_MOUNT, MOUNT_HUNG, NOT_MOUNTED)
"""The ``reason`` of NodeGetVolumeHealth entries (all INACCESSIBLE)."""


class Inspector:
    def __init__(self, *, node_id: str, path_roots: Sequence[Path], mounter: Mounter, state: StateStore) -> None:
        self._node_id = node_id
        self._roots = tuple(path_roots)
        self._mounter = mounter
        self._state = state

    async def stats(self, request: csi_pb2.NodeGetVolumeStatsRequest) -> csi_pb2.NodeGetVolumeStatsResponse:
        path = await self._mounted_path(request.volume_id, request.volume_path)
        with metrics.timed("NodeGetVolumeStats", "statfs"):
            usage = await self._usage(path)
        Unit = csi_pb2.VolumeUsage.Unit
        return csi_pb2.NodeGetVolumeStatsResponse(
            usage=[
                csi_pb2.VolumeUsage(
                    unit=Unit.BYTES,
                    total=usage.total_bytes,
                    available=usage.available_bytes,
                    used=usage.used_bytes,
                ),
                csi_pb2.VolumeUsage(
                    unit=Unit.INODES,
                    total=usage.total_inodes,
                    available=usage.available_inodes,
                    used=usage.used_inodes,
                ),
            ]
        )

    async def expand(self, request: csi_pb2.NodeExpandVolumeRequest) -> csi_pb2.NodeExpandVolumeResponse:
        if request.HasField("volume_capability"):
            validation.capability(request.volume_capability, present=True)
        path = await self._mounted_path(request.volume_id, request.volume_path)
        with metrics.timed("NodeExpandVolume", "statfs"):
            usage = await self._usage(path)
        return csi_pb2.NodeExpandVolumeResponse(capacity_bytes=usage.total_bytes)

    async def _mounted_path(self, volume_id: str, volume_path: str) -> Path:
        """``volume_path`` when it is a live mount of ``volume_id``; NOT_FOUND when it cannot be one."""
        if not volume_id:
            raise InvalidArgument("volume_id", "required")
        if not volume_path:
            raise InvalidArgument("volume_path", "required")
        try:
            path = checked_path("volume_path", volume_path, self._roots)
        except InvalidArgument as e:
            raise NotFound(f"volume {volume_id[:80]} is not at {volume_path[:200]!r}: {e}") from None
        record = self._state.get(volume_id) if attributes.valid_volume_id(volume_id) else None
        if record is None:
            raise NotFound(f"volume {volume_id[:80]} is not staged on node {self._node_id}")
        state = await self._mounter.probe(path)
        if state is PathState.STALE:
            raise FailedPrecondition(
                f"the mount at {path} is stale (Transport endpoint is not connected): the glusterfs client died; "
                "the next NodeStage/NodePublish of the volume mounts it again"
            )
        if state is PathState.UNREADABLE:
            raise FailedPrecondition(f"the mount at {path} does not answer stat: the storage servers may be down")
        entry = self._mounter.table().at(path)
        if state is not PathState.DIRECTORY or entry is None or entry.gluster_volume != record.volume:
            raise NotFound(f"volume {volume_id} ({record.volume}) is not mounted at {path}")
        return path

    async def _usage(self, path: Path) -> Usage:
        try:
            return await self._mounter.usage(path)
        except TimeoutError as e:
            raise FailedPrecondition(f"statfs of {path} did not answer: the storage servers may be down") from e
        except OSError as e:
            raise FailedPrecondition(f"statfs of {path} failed: {e.strerror or e}") from e

    async def health(self, request: csi_pb2.NodeGetVolumeHealthRequest) -> csi_pb2.NodeGetVolumeHealthResponse:
        volume_id = validation.volume_id(request.volume_id)
        paths: list[Path] = []
        if request.staging_target_path:
            paths.append(checked_path("staging_target_path", request.staging_target_path, self._roots))
        if request.volume_publish_path:
            paths.append(checked_path("volume_publish_path", request.volume_publish_path, self._roots))
        record = self._state.get(volume_id)
        if record is None:
            raise NotFound(f"volume {volume_id} is not staged on node {self._node_id}")
        if not request.staging_target_path:
            paths.insert(0, Path(record.staging_path))
        entries = [await self._health_entry(path, record) for path in paths]
        health = csi_pb2.VolumeHealth(volume_id=volume_id, health_statuses=[e for e in entries if e is not None])
        return csi_pb2.NodeGetVolumeHealthResponse(volume_health=health)

    async def _health_entry(self, path: Path, record: StagedVolume) -> csi_pb2.VolumeHealth.VolumeHealthEntry | None:
        Entry = csi_pb2.VolumeHealth.VolumeHealthEntry
        state = await self._mounter.probe(path)
        if state is PathState.STALE:
            return Entry(
                status=csi_pb2.INACCESSIBLE,
                reason=STALE_MOUNT,
                message=f"{path}: Transport endpoint is not connected (the glusterfs client died)",
            )
        if state is PathState.UNREADABLE:
            return Entry(status=csi_pb2.INACCESSIBLE, reason=MOUNT_HUNG, message=f"{path} does not answer stat")
        entry = self._mounter.table().at(path)
        if entry is None or entry.gluster_volume != record.volume:
            return Entry(status=csi_pb2.INACCESSIBLE, reason=NOT_MOUNTED, message=f"{record.volume} is not at {path}")
        return None

    async def stale_volumes(self) -> list[StagedVolume]:
        """Staged volumes whose staging mount is stale (for NodeGetStorageHealth)."""
        return [r for r in self._state.all() if await self._mounter.probe(Path(r.staging_path)) is PathState.STALE]
