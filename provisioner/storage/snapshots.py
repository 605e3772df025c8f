"""Gluster snapshots of our volumes, and the bricks of clones made from them, on the nodes.

A snapshot is ``gluster snapshot create`` (every brick must be a thin LV: gluster barriers I/O and
takes a thin snapshot of each brick LV, named ``<snapshot volume>_<n>``, in the brick's pool). Its
description carries our snapshot id, so the pool describes itself: a re-run finds its own snapshot
and adopts it, and a snapshot of the same name that is not ours is never taken or deleted.

A clone is made the way Heketi's bricks are, not by ``gluster snapshot clone``: each brick is a
thin snapshot of the gluster snapshot's LV of the origin brick, tagged with the clone's ids and
mounted at the clone brick's own place (so the clone is one of our volumes in every respect,
found by reconcile, grown and deleted like any other); its root loses the origin volume's marks,
and the gluster volume is then created on those bricks like a new one (``VolumeOperations``).
"""

from __future__ import annotations

import asyncio
import re

from provisioner.domain import Brick, BrickBackend, Cluster, Snapshot, Volume
from provisioner.errors import GlusterError, SnapshotNameTaken, SnapshotNotFound, SnapshotUnsupported
from provisioner.storage import commands
from provisioner.storage.backends import LvmBackend, lv_name, vg_name
from provisioner.storage.operations import VolumeOperations, raise_first
from provisioner.storage.parsing import SnapshotInfo, parse_snapshot_info

DESCRIPTION_PREFIX = "provisioner:"
"""``provisioner:<snapshot id>``: the description of every gluster snapshot we take."""
NOT_THIN = re.compile(r"thin(ly)? provisioned|not a thin|thin LV", re.IGNORECASE)


def description_of(snapshot: Snapshot) -> str:
    return f"{DESCRIPTION_PREFIX}{snapshot.id}"


def thin_only(cluster: Cluster, volume: Volume) -> None:
    """Refuse, before anything runs, a volume with a brick that is not a thin LV (a file device)."""
    flat = []
    for brick in volume.bricks:
        node, device = cluster.device(brick.device)
        if device.backend is not BrickBackend.LVM:
            flat.append(f"{node.manage}:{device.name}")
    if flat:
        raise SnapshotUnsupported(
            f"volume {volume.name} has {len(flat)} brick(s) on {device.backend.value}-backend devices "
            f"({', '.join(sorted(set(flat))[:5])}): gluster snapshots need every brick to be a thin LV (lvm backend)"
        )


class SnapshotOperations:
    def __init__(self, volumes: VolumeOperations) -> None:
        self._volumes = volumes
        self._cli = volumes.cli

    async def info(self, cluster: Cluster, volume: Volume, name: str) -> SnapshotInfo | None:
        argv = commands.snapshot_info(name, timeout=self._cli.timeout)
        answer = await self._volumes.gluster(cluster, volume, argv)
        if not answer.ok:
            if answer.verdict.missing:
                return None
            raise GlusterError(f"snapshot info {name}: {answer.message}")
        found = [s for s in parse_snapshot_info(answer.stdout) if s.name == name]
        return found[0] if found else None

    async def create(self, cluster: Cluster, volume: Volume, snapshot: Snapshot) -> SnapshotInfo:
        """Take the snapshot, or find it taken by an earlier try of the same request."""
        existing = await self._ours(cluster, volume, snapshot)
        if existing is not None:
            return existing
        argv = commands.snapshot_create(snapshot.name, volume.name, description_of(snapshot), timeout=self._cli.timeout)
        answer = await self._volumes.gluster(cluster, volume, argv)
        if not answer.ok and not answer.verdict.exists:
            if NOT_THIN.search(answer.message):
                raise SnapshotUnsupported(f"snapshot of {volume.name}: {answer.message}")
            raise GlusterError(f"snapshot create {snapshot.name} of {volume.name}: {answer.message}")
        taken = await self._ours(cluster, volume, snapshot)
        if taken is None:
            raise GlusterError(f"snapshot create {snapshot.name}: gluster answered, but has no such snapshot")
        return taken

    async def delete(self, cluster: Cluster, volume: Volume, snapshot: Snapshot) -> bool:
        """Delete our snapshot; returns whether gluster still had it."""
        if await self._ours(cluster, volume, snapshot) is None:
            return False
        answer = await self._volumes.gluster(
            cluster, volume, commands.snapshot_delete(snapshot.name, timeout=self._cli.timeout)
        )
        if not answer.ok and not answer.verdict.missing:
            raise GlusterError(f"snapshot delete {snapshot.name}: {answer.message}")
        return answer.ok

    async def _ours(self, cluster: Cluster, volume: Volume, snapshot: Snapshot) -> SnapshotInfo | None:
        info = await self.info(cluster, volume, snapshot.name)
        if info is None:
            return None
        if info.description != description_of(snapshot) or info.origin != volume.name:
            raise SnapshotNameTaken(
                f"the pool has a snapshot named {snapshot.name} (of {info.origin}, described "
                f"{info.description[:80]!r}) that is not snapshot {snapshot.id}"
            )
        return info

    async def clone_bricks(self, cluster: Cluster, origin: Volume, clone: Volume, snapshot: SnapshotInfo) -> None:
        """Each brick of ``clone`` from the snapshot's LV of the origin brick in its place, in
        parallel across nodes; clone brick ``i`` is made from origin brick ``i``."""
        pairs = list(zip(origin.bricks, clone.bricks, strict=True))
        done = await asyncio.gather(
            *(self._clone_brick(cluster, clone, o, c, snapshot) for o, c in pairs), return_exceptions=True
        )
        raise_first(done)

    async def _clone_brick(
        self, cluster: Cluster, clone: Volume, origin: Brick, brick: Brick, snapshot: SnapshotInfo
    ) -> None:
        [spec] = self._volumes.specs(cluster, clone, [brick])
        vg = vg_name(spec.device)
        argv = commands.snapshot_lv(vg, lv_name(origin), snapshot.snapshot_volume)
        found = await self._volumes.run(spec.node.manage, argv)
        names = found.stdout.split()
        if len(names) != 1:
            raise SnapshotNotFound(
                f"snapshot {snapshot.name} has {len(names)} LV(s) of brick {origin.id} on {spec.node.manage} "
                f"(in {vg}); expected one"
            )
        backend = self._volumes.backend(spec.device)
        assert isinstance(backend, LvmBackend), "thin_only refused other backends"
        await backend.clone(spec, names[0])
