"""Brick backends: how a device is made ready for bricks, and how one brick's filesystem is made on
a node and taken apart again.

``file`` — a sparse image per brick in the device's directory, formatted XFS and loop-mounted at
Heketi's mount point layout. It needs no device-mapper, so it runs on developer machines and CI,
and it is a real brick: gluster cannot tell it from an LV.

``lvm`` — Heketi's layout: a PV and VG ``vg_<device id>`` per device, and per brick a thin pool
``tp_<brick id>`` holding one thin LV ``brick_<brick id>`` tagged with our ids. Preparing a device
refuses one that holds anything (a filesystem, a partition table, another VG) unless the topology
says ``destroydata``, and its capacity is then read from the VG.

Both write the brick's mount to the node's fstab (so it comes back after a reboot) and remove it
before the storage under it goes. Every step is idempotent: a redelivered request re-runs it and
converges on the same brick; what is already there, or already gone, is fine. Deciding *where*
bricks go, and whether a device has room, is the allocator's job, not this module's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from provisioner.domain import Brick, BrickBackend, Device, Node, VolumeId, brick_mount_point
from provisioner.errors import CommandFailed, DeviceFull, DeviceNotEmpty
from provisioner.executor import Executor
from provisioner.storage import commands, tags
from provisioner.storage.parsing import parse_signatures, parse_vg_space


@dataclass(frozen=True, slots=True)
class BrickSpec:
    """Everything a backend needs to build or remove one brick."""

    node: Node
    device: Device
    brick: Brick
    volume: VolumeId
    brick_root: str
    gid: int | None = None
    snapshot_factor: float = 1.0  # thin pool size over brick size (lvm only)
    owner: str = ""  # the deployment that made it (reconcile's orphans are only ever its own)

    @property
    def mount_point(self) -> str:
        return brick_mount_point(self.brick_root, self.device.id, self.brick.id)

    @property
    def path(self) -> str:
        return f"{self.mount_point}/brick"


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """Everything a backend needs to make a device ready for bricks and to measure it."""

    node: Node
    device: Device
    cluster: str
    owner: str = ""
    destroy_data: bool = False  # Heketi's ``destroydata``: wipe what the device holds first

    @property
    def where(self) -> str:
        return f"node {self.node.manage} device {self.device.name}"


class Backend(Protocol):
    async def prepare(self, spec: DeviceSpec) -> None: ...
    async def measure(self, spec: DeviceSpec) -> int | None:
        """Bytes the device offers bricks, as the node reports it; None when only the topology can say."""
        ...

    async def resync(self, spec: DeviceSpec) -> None:
        """Take in a disk that grew, so that ``measure`` reports its new size."""
        ...

    async def create(self, spec: BrickSpec) -> None: ...
    async def destroy(self, spec: BrickSpec) -> None: ...


class _NodeCommands:
    """What both backends share: running argv on the brick's node, the fstab, the brick directory."""

    def __init__(self, executor: Executor, *, timeout: float, fstab: str) -> None:
        self._executor = executor
        self._timeout = timeout
        self._fstab = fstab

    async def _run(self, host: str, argv: commands.Argv, *, check: bool = True) -> None:
        await self._executor.run(host, argv, timeout=self._timeout, check=check)

    async def _succeeds(self, host: str, argv: commands.Argv) -> bool:
        result = await self._executor.run(host, argv, timeout=self._timeout, check=False)
        return result.exit_status == 0

    async def _is_mounted(self, spec: BrickSpec) -> bool:
        return await self._succeeds(spec.node.manage, commands.is_mounted(spec.mount_point))

    async def _add_to_fstab(self, spec: BrickSpec, source: str, options: str) -> None:
        await self._run(spec.node.manage, commands.fstab_add(self._fstab, source, spec.mount_point, options))

    async def _remove_from_fstab(self, spec: BrickSpec) -> None:
        await self._run(spec.node.manage, commands.fstab_remove(self._fstab, spec.mount_point))

    async def _unmount(self, spec: BrickSpec) -> None:
        if await self._is_mounted(spec):
            await self._run(spec.node.manage, commands.umount(spec.mount_point))

    async def _make_brick_dir(self, spec: BrickSpec) -> None:
        """The ``brick/`` subdirectory gluster uses, group-owned by the volume's gid (setgid)."""
        await self._run(spec.node.manage, commands.mkdir(spec.path))
        if spec.gid is not None:
            await self._run(spec.node.manage, commands.set_group(spec.path, spec.gid))
            await self._run(spec.node.manage, commands.set_mode(spec.path, "2775"))


# --- file -------------------------------------------------------------------------------------------


def image_path(device: Device, brick: Brick) -> str:
    return f"{device.name}/brick_{brick.id}.img"


class FileBackend(_NodeCommands):
    async def prepare(self, spec: DeviceSpec) -> None:
        """A file-backend device is a directory of brick images."""
        await self._run(spec.node.manage, commands.mkdir(spec.device.name))

    async def measure(self, spec: DeviceSpec) -> int | None:
        """Images are sparse, so the filesystem's size says nothing: the declared capacity stands."""
        return None

    async def resync(self, spec: DeviceSpec) -> None:
        """Nothing to take in: a file device's capacity is what the topology declares."""

    async def create(self, spec: BrickSpec) -> None:
        host = spec.node.manage
        image = image_path(spec.device, spec.brick)
        mounted = await self._is_mounted(spec)
        if not mounted:
            await self._run(host, commands.mkdir(spec.mount_point))
            await self._run(host, commands.create_image(image, spec.brick.size))
            for xattr, value in tags.image_xattrs(spec.volume, spec.owner):
                await self._run(host, commands.tag_file(image, xattr, value))
            await self._run(host, commands.make_xfs(image, arbiter=spec.brick.arbiter))
        # Outside the ``mounted`` test: a crash between mount and fstab must still get its line.
        await self._add_to_fstab(spec, image, commands.FSTAB_LOOP_OPTIONS)
        if not mounted:
            await self._run(host, commands.mount_loop(image, spec.mount_point))
        await self._make_brick_dir(spec)

    async def destroy(self, spec: BrickSpec) -> None:
        """Unmount, drop the fstab line, delete the image, remove the mount point."""
        await self._unmount(spec)
        await self._remove_from_fstab(spec)
        await self._run(spec.node.manage, commands.remove_file(image_path(spec.device, spec.brick)))
        await self._run(spec.node.manage, commands.remove_dir(spec.mount_point), check=False)


# --- lvm --------------------------------------------------------------------------------------------

EXTENT_KIB = 4 * 1024  # vgcreate --physicalextentsize=4M
ORIGIN_MARKS = ("trusted.glusterfs.volume-id", "trusted.gfid")
"""What makes gluster see a brick root as part of a volume (``is already part of a volume``)."""
FULL = re.compile(r"insufficient free space|not enough free space|Insufficient suitable", re.IGNORECASE)
"""How lvcreate says the VG has no room for the pool (``Volume group "vg_x" has insufficient free space``)."""
MAX_POOL_METADATA_KIB = 16 * 1024 * 1024  # LVM's limit for thin pool metadata, 16 GiB


@dataclass(frozen=True, slots=True)
class ThinPoolSize:
    """Sizes in KiB, as Heketi passes them to ``lvcreate``."""

    pool: int
    metadata: int
    virtual: int


def _align(kib: int) -> int:
    return -(-kib // EXTENT_KIB) * EXTENT_KIB


def thin_pool_size(brick_size: int, snapshot_factor: float) -> ThinPoolSize:
    """Heketi's ``SpaceNeeded``: the pool is ``snapshot_factor`` times the brick, rounded up to an extent;
    its metadata is 0.5 % of the pool (truncated), at most 16 GiB, rounded up to an extent.

    The device must hold ``pool + metadata``; e.g. a 1 GiB brick at factor 1 needs a 1048576 KiB
    pool and 8192 KiB of metadata.
    """
    virtual = -(-brick_size // 1024)
    pool = _align(math.ceil(virtual * snapshot_factor))
    metadata = _align(min(pool * 5 // 1000, MAX_POOL_METADATA_KIB))
    return ThinPoolSize(pool=pool, metadata=metadata, virtual=virtual)


def vg_name(device: Device) -> str:
    return f"vg_{device.id}"


def pool_name(brick: Brick) -> str:
    """``tp_<id>`` of the brick whose pool holds it: its own, or, for a clone's, its origin's."""
    return f"tp_{brick.pool_brick}"


def lv_name(brick: Brick) -> str:
    return f"brick_{brick.id}"


def device_node(device: Device, brick: Brick) -> str:
    """Ids are hex, so no hyphen needs device-mapper's doubling."""
    return f"/dev/mapper/{vg_name(device)}-{lv_name(brick)}"


class LvmBackend(_NodeCommands):
    """Heketi's commands and flags (``executors/cmdexec``), with existence checks before each step."""

    async def prepare(self, spec: DeviceSpec) -> None:
        """``pvcreate`` and ``vgcreate`` (tagged with our ids) unless done, on an empty device only.

        A VG named after the device's id is ours: a re-load finds it and is done, whatever
        ``destroydata`` says, so a re-load never wipes a device in use. A PV in no VG holds no data
        (a crash between ``pvcreate`` and ``vgcreate`` leaves one), so it is taken as it is. Anything
        else on the device, a filesystem, a partition table, another VG, is refused, naming the node,
        the device and what was found, unless ``destroydata`` is set: then its signatures are wiped.
        A PV of another VG is refused even then, since that VG may span other disks."""
        host, device, vg = spec.node.manage, spec.device.name, vg_name(spec.device)
        if await self._succeeds(host, commands.vg_exists(vg)):
            return
        pv = await self._executor.run(host, commands.pv_volume_group(device), timeout=self._timeout, check=False)
        if pv.exit_status == 0:
            if pv.stdout.strip():
                raise DeviceNotEmpty(
                    f"{spec.where}: is a physical volume of LVM volume group {pv.stdout.strip()[:64]}; "
                    "remove that volume group first (destroydata does not)"
                )
        else:
            listed = await self._executor.run(host, commands.signatures(device), timeout=self._timeout)
            found = parse_signatures(listed.stdout)
            if found and not spec.destroy_data:
                raise DeviceNotEmpty(
                    f"{spec.where}: holds {', '.join(found)}; set destroydata to wipe it, or name another device"
                )
            if found:
                await self._run(host, commands.wipe_signatures(device))
            await self._run(host, commands.pv_create(device))
        await self._run(
            host, commands.vg_create(vg, device, tags=tags.vg_tags(spec.device.id, spec.cluster, spec.owner))
        )

    async def measure(self, spec: DeviceSpec) -> int | None:
        """The VG's size: what the disk really offers, after LVM's metadata."""
        read = await self._executor.run(
            spec.node.manage, commands.vg_space(vg_name(spec.device)), timeout=self._timeout
        )
        return parse_vg_space(read.stdout)[0]

    async def resync(self, spec: DeviceSpec) -> None:
        """Grow the PV (so the VG) to the disk's size now, after the disk grew (``device resync``)."""
        await self._run(spec.node.manage, commands.pv_resize(spec.device.name))

    async def clone(self, spec: BrickSpec, source: str) -> None:
        """A clone's brick: a thin snapshot of LV ``source`` (a gluster snapshot's, in the pool of the
        origin brick) mounted at the brick's own place, its root stripped of the origin volume's
        marks so gluster takes it into a new volume. Idempotent until that volume exists (then
        ``handling.clones`` does not call it again: stripping would take the new volume's marks)."""
        host, vg, lv = spec.node.manage, vg_name(spec.device), lv_name(spec.brick)

        async def snapshot() -> None:
            if not await self._succeeds(host, commands.lv_exists(vg, lv)):
                marks = tags.lv_tags(spec.volume, spec.brick.id, spec.owner)
                await self._run(host, commands.thin_snapshot_create(vg, source, lv, tags=marks))

        await self._mount_lv(spec, snapshot)
        for mark in ORIGIN_MARKS:  # absent after a retry: exit 1 is fine
            await self._run(host, commands.remove_xattr(spec.path, mark), check=False)

    async def create(self, spec: BrickSpec) -> None:
        host, vg, lv = spec.node.manage, vg_name(spec.device), lv_name(spec.brick)

        async def formatted() -> None:
            if not await self._succeeds(host, commands.lv_exists(vg, lv)):
                await self._create_lv(spec)
            await self._run(host, commands.make_xfs(device_node(spec.device, spec.brick), arbiter=spec.brick.arbiter))

        await self._mount_lv(spec, formatted)
        await self._make_brick_dir(spec)

    async def _mount_lv(self, spec: BrickSpec, make: Callable[[], Awaitable[None]]) -> None:
        """The brick's LV mounted at its place with its fstab line; ``make`` readies the LV (runs
        unless it is mounted already). The fstab line is written outside that test: a crash
        between the mount and the fstab edit must still get its line."""
        dev = device_node(spec.device, spec.brick)
        mounted = await self._is_mounted(spec)
        if not mounted:
            await self._run(spec.node.manage, commands.mkdir(spec.mount_point))
            await make()
        await self._add_to_fstab(spec, dev, commands.FSTAB_XFS_OPTIONS)
        if not mounted:
            await self._run(spec.node.manage, commands.mount_xfs(dev, spec.mount_point))

    async def _create_lv(self, spec: BrickSpec) -> None:
        """The pool, then the thin LV in it. Not Heketi's one ``lvcreate --thin`` for both: that
        one puts ``--addtag`` on the pool, leaving the brick LV without the marks reconcile reads."""
        host = spec.node.manage
        vg, pool, lv = vg_name(spec.device), pool_name(spec.brick), lv_name(spec.brick)
        size = thin_pool_size(spec.brick.size, spec.snapshot_factor)
        if not await self._succeeds(host, commands.lv_exists(vg, pool)):  # else: a crash came between the two
            argv = commands.thin_pool_create(vg, pool, pool_kib=size.pool, metadata_kib=size.metadata)
            try:
                await self._run(host, argv)
            except CommandFailed as e:
                if FULL.search(e.stderr) is None:
                    raise
                needed = (size.pool + size.metadata) * 1024
                raise DeviceFull(
                    f"node {host} device {spec.device.name}: no room for a brick of {spec.brick.size} bytes "
                    f"({needed} bytes of thin pool and metadata): {e.stderr.strip().splitlines()[-1][:300]}"
                ) from e
        marks = tags.lv_tags(spec.volume, spec.brick.id, spec.owner)
        await self._run(host, commands.thin_lv_create(vg, pool, lv, virtual_kib=size.virtual, tags=marks))

    async def destroy(self, spec: BrickSpec) -> None:
        """Heketi's order: unmount, fstab (before the LV goes, so a crash cannot leave an fstab that
        names a missing device), the thin LV, the pool once no thin LV is left in it, the mount point."""
        host = spec.node.manage
        vg, pool, lv = vg_name(spec.device), pool_name(spec.brick), lv_name(spec.brick)
        await self._unmount(spec)
        await self._remove_from_fstab(spec)
        if await self._succeeds(host, commands.lv_exists(vg, lv)):
            await self._run(host, commands.lv_remove(vg, lv))
        count = await self._executor.run(host, commands.thin_count(vg, pool), timeout=self._timeout, check=False)
        if count.exit_status == 0 and count.stdout.strip() == "0":
            await self._run(host, commands.lv_remove(vg, pool))
        await self._run(host, commands.remove_dir(spec.mount_point), check=False)


def backend_for(kind: BrickBackend, executor: Executor, *, timeout: float, fstab: str) -> Backend:
    match kind:
        case BrickBackend.FILE:
            return FileBackend(executor, timeout=timeout, fstab=fstab)
        case BrickBackend.LVM:
            return LvmBackend(executor, timeout=timeout, fstab=fstab)
