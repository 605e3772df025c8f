"""Brick backends: how one brick's filesystem is made on a node and taken apart again.

``file`` — a sparse image per brick in the device's directory, formatted XFS and loop-mounted at
Heketi's mount point layout. It needs no device-mapper, so it runs on developer machines and CI,
and it is a real brick: gluster cannot tell it from an LV.
Every step is idempotent: a redelivered request re-runs it and converges on the same brick.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from provisioner.domain import Brick, BrickBackend, Device, Node, VolumeId, brick_mount_point
from provisioner.errors import PermanentError
from provisioner.executor import Executor
from provisioner.storage import commands


@dataclass(frozen=True, slots=True)
class BrickSpec:
    """Everything a backend needs to build or remove one brick."""

    node: Node
    device: Device
    brick: Brick
    volume: VolumeId
    brick_root: str
    gid: int | None = None

    @property
    def mount_point(self) -> str:
        return brick_mount_point(self.brick_root, self.device.id, self.brick.id)

    @property
    def path(self) -> str:
        return f"{self.mount_point}/brick"


class Backend(Protocol):
    async def create(self, spec: BrickSpec) -> None: ...
    async def destroy(self, spec: BrickSpec) -> None: ...


def image_path(device: Device, brick: Brick) -> str:
    return f"{device.name}/brick_{brick.id}.img"


class FileBackend:
    def __init__(self, executor: Executor, *, timeout: float) -> None:
        self._executor = executor
        self._timeout = timeout

    async def _run(self, spec: BrickSpec, argv: commands.Argv, *, check: bool = True) -> int:
        result = await self._executor.run(spec.node.manage, argv, timeout=self._timeout, check=check)
        return result.exit_status

    async def create(self, spec: BrickSpec) -> None:
        image = image_path(spec.device, spec.brick)
        mounted = await self._run(spec, commands.is_mounted(spec.mount_point), check=False) == 0
        if not mounted:
            await self._run(spec, commands.mkdir(spec.mount_point))
            await self._run(spec, commands.create_image(image, spec.brick.size))
            await self._run(spec, commands.tag_file(image, "volume", spec.volume))
            await self._run(spec, commands.make_xfs(image, arbiter=spec.brick.arbiter))
            await self._run(spec, commands.mount_loop(image, spec.mount_point))
        await self._run(spec, commands.mkdir(spec.path))
        if spec.gid is not None:
            await self._run(spec, commands.set_group(spec.path, spec.gid))
            await self._run(spec, commands.set_mode(spec.path, "2775"))

    async def destroy(self, spec: BrickSpec) -> None:
        """Unmount, delete the image, remove the mount point; parts already gone are fine."""
        if await self._run(spec, commands.is_mounted(spec.mount_point), check=False) == 0:
            await self._run(spec, commands.umount(spec.mount_point))
        await self._run(spec, commands.remove_file(image_path(spec.device, spec.brick)))
        await self._run(spec, commands.remove_dir(spec.mount_point), check=False)


class UnsupportedBackend:
    def __init__(self, backend: BrickBackend) -> None:
        self._backend = backend

    async def create(self, spec: BrickSpec) -> None:
        raise PermanentError(
            f"device {spec.device.name} on {spec.node.manage} uses the {self._backend} backend, "
            "which this version cannot build yet",
            reason="UnsupportedBackend",
        )

    async def destroy(self, spec: BrickSpec) -> None:
        await self.create(spec)


def backend_for(kind: BrickBackend, executor: Executor, *, timeout: float) -> Backend:
    if kind is BrickBackend.FILE:
        return FileBackend(executor, timeout=timeout)
    return UnsupportedBackend(kind)
