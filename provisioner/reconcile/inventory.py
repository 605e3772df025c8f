"""What a cluster's nodes hold, read over SSH, and the repairs ``reconcile --repair`` makes.

One pass per node (in parallel): the tagged brick images of its file devices, its thin LVs with our
tags (lvm devices), and its mounts; plus ``gluster volume info`` of the whole pool from any node. A
node that does not answer is listed as unreachable and nothing about it is judged, so a dead node
never makes healthy bricks look missing or orphaned. The diff itself is ``provisioner.reconcile``.
"""

from __future__ import annotations

import asyncio
import logging
import re

from provisioner.domain import BrickBackend, Cluster, DeviceId, DeviceSpace, Node
from provisioner.errors import ProvisionerError
from provisioner.executor import CommandResult, Executor
from provisioner.reconcile.drift import (
    Drift,
    Inventory,
    NodeBrick,
    bricks_from_images,
    bricks_from_lvs,
    with_mounts,
)
from provisioner.storage import commands
from provisioner.storage.operations import VolumeOperations
from provisioner.storage.parsing import (
    UnparsableOutput,
    parse_df_space,
    parse_findmnt,
    parse_getfattr_dump,
    parse_lvs_tags,
    parse_vg_space,
)

log = logging.getLogger(__name__)
VG_NOT_FOUND = re.compile(r"Volume group \S+ not found")
"""How ``vgs`` says a VG is not there (and not, say, that lvm itself failed)."""


class NodeInventory:
    def __init__(self, executor: Executor, operations: VolumeOperations, *, timeout: float = 60.0) -> None:
        self._executor = executor
        self._ops = operations
        self._timeout = timeout

    async def take(self, cluster: Cluster) -> Inventory:
        nodes = await asyncio.gather(*(self._node(cluster, node) for node in cluster.nodes))
        read = [found for found in nodes if found is not None]
        unreachable = tuple(n.manage for n, found in zip(cluster.nodes, nodes, strict=True) if found is None)
        volumes = await self._ops.all_volumes(cluster)
        return Inventory(
            volumes=tuple(volumes) if volumes is not None else None,
            bricks=tuple(b for bricks, _, _ in read for b in bricks),
            unreachable=unreachable,
            space=tuple(s for _, spaces, _ in read for s in spaces),
            missing_devices=tuple(d for _, _, missing in read for d in missing),
        )

    async def _node(
        self, cluster: Cluster, node: Node
    ) -> tuple[list[NodeBrick], list[DeviceSpace], list[DeviceId]] | None:
        """The bricks on one node, its devices' room and its lvm devices without their VG, or None
        when it cannot be read."""
        host = node.manage
        stored: list[NodeBrick] = []
        spaces: list[DeviceSpace] = []
        missing: list[DeviceId] = []
        try:
            files = {d.name: d.id for d in node.devices if d.backend is BrickBackend.FILE}
            for directory, file_device in files.items():
                listed = await self._run(host, commands.list_brick_images(directory), check=False)
                stored += bricks_from_images(host, parse_getfattr_dump(listed.stdout), files)
                space = await self._run(host, commands.filesystem_space(directory), check=False)
                if space.exit_status == 0:
                    spaces.append(DeviceSpace(file_device, *parse_df_space(space.stdout)))
            lvm = [d for d in node.devices if d.backend is BrickBackend.LVM]
            if lvm:
                lvs = await self._run(host, commands.list_tagged_lvs())
                stored += bricks_from_lvs(host, parse_lvs_tags(lvs.stdout), {str(d.id) for d in lvm})
                for device in lvm:
                    space = await self._run(host, commands.vg_space(f"vg_{device.id}"), check=False)
                    if space.exit_status == 0:
                        spaces.append(DeviceSpace(device.id, *parse_vg_space(space.stdout)))
                    elif VG_NOT_FOUND.search(space.stderr):
                        missing.append(device.id)
            mounts = await self._run(host, commands.list_mounts())
        except (ProvisionerError, UnparsableOutput) as e:
            log.warning("reconcile: node %s not read: %s", host, e)
            return None
        devices = {str(d.id) for d in node.devices}
        return with_mounts(host, stored, parse_findmnt(mounts.stdout), cluster.brick_root, devices), spaces, missing

    async def _run(self, host: str, argv: commands.Argv, *, check: bool = True) -> CommandResult:
        return await self._executor.run(host, argv, timeout=self._timeout, check=check)

    async def repair(self, cluster: Cluster, drift: Drift) -> None:
        """Remove one orphan (raises ProvisionerError when it cannot)."""
        if drift.kind == "orphan_volume" and drift.volume_id:
            await self._ops.delete_orphan(cluster, drift.subject, drift.volume_id)
        elif drift.kind == "orphan_brick" and drift.brick is not None:
            brick = drift.brick
            await self._ops.destroy_orphan_brick(cluster, brick.device, brick.brick, brick.volume or "")
        else:
            raise ValueError(f"{drift.kind} is not repaired on the nodes")
