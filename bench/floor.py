"""The floor: the daemon's node commands, issued by the benchmark itself, without Kafka or the daemon.

Each volume runs exactly the argv the daemon runs, from the same builders
(``provisioner.storage.commands``), for the same brick layout (``provisioner.storage.backends``,
``provisioner.domain``), placed by the same allocator, over the same transport
(``SshExecutor`` with the daemon's default options, wrapped in ``MeasuredExecutor`` so the floor's
per-command times land in the same Prometheus histogram the daemon exposes):

* provision: per brick, in parallel across the bricks (so across the three nodes): ``mountpoint``,
  ``mkdir``, ``truncate``, ``setfattr``, ``mkfs.xfs``, ``mount``, ``mkdir``; then on the first
  brick's node ``gluster volume create``, ``volume set user.provisioner.id``, ``volume start``;
* delete: ``gluster volume info``, ``volume stop force``, ``volume delete``; then per brick, in
  parallel, ``mountpoint``, ``umount``, ``rm -f`` the image, ``rmdir`` the mount point.

glusterd's "Another transaction is in progress" is retried as the daemon retries it (0.25 s,
doubling). What the floor leaves out is everything that is not a node command: Kafka, the intent
record, the result transaction, the queueing of requests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass

from provisioner.domain import Cluster, Replicate, Volume, VolumeId, new_id
from provisioner.executor import Executor
from provisioner.planning.allocator import PlacementRequest, plan_volume
from provisioner.state import DesiredState, StateChange
from provisioner.storage import commands
from provisioner.storage.backends import BrickSpec, image_path
from provisioner.storage.parsing import OpResult, parse_op_result
from provisioner.storage.tags import ID_OPTION, IMAGE_VOLUME_XATTR

COMMAND_TIMEOUT = 120.0  # StorageSettings.command_timeout
GLUSTER_TIMEOUT = 120  # StorageSettings.gluster_timeout (the SSH timeout adds 30, as in the daemon)
BUSY_RETRIES = 8  # the floor retries a busy glusterd itself, as a hand-written script would


class FloorError(RuntimeError):
    pass


@dataclass
class Timing:
    """Seconds of one volume's floor run, by phase."""

    started: float
    bricks: float = 0.0
    gluster: float = 0.0
    finished: float = 0.0


class Floor:
    def __init__(self, executor: Executor, cluster: Cluster) -> None:
        self._executor = executor
        self.cluster = cluster
        self.busy_retries = 0
        self._state = DesiredState()  # placement of the floor's own volumes, as the daemon would place them
        self._state.apply(StateChange.put_cluster(cluster))

    def plan(self, name: str, size: int) -> Volume:
        volume_id = VolumeId(new_id())
        cluster = self._state.clusters[self.cluster.id]
        placed = plan_volume(
            PlacementRequest(volume=volume_id, size=size, durability=Replicate()),
            cluster,
            self._state.usage(cluster.id),
        )
        volume = Volume(
            id=volume_id, name=name, cluster=cluster.id, size=size, durability=Replicate(), bricks=placed.bricks
        )
        self._state.apply(StateChange.put_volume(volume))
        return volume

    def forget(self, volume: Volume) -> None:
        self._state.apply(StateChange.delete_volume(volume.id))

    def specs(self, volume: Volume) -> list[BrickSpec]:
        specs = []
        for brick in volume.bricks:
            node, device = self.cluster.device(brick.device)
            specs.append(
                BrickSpec(node=node, device=device, brick=brick, volume=volume.id, brick_root=self.cluster.brick_root)
            )
        return specs

    # --- provision ------------------------------------------------------------------------------

    async def provision(self, volume: Volume) -> Timing:
        timing = Timing(started=time.monotonic())
        specs = self.specs(volume)
        await _all(self._make_brick(spec) for spec in specs)
        timing.bricks = time.monotonic() - timing.started
        host = specs[0].node.manage
        bricks = [commands.brick_argument(s.node.storage, s.path) for s in specs]
        created = await self._gluster(
            host, commands.volume_create(volume.name, volume.durability, bricks, timeout=GLUSTER_TIMEOUT)
        )
        _expect(created, "volume create", volume.name)
        tagged = await self._gluster(
            host, commands.volume_set(volume.name, ID_OPTION, volume.id, timeout=GLUSTER_TIMEOUT)
        )
        _expect(tagged, "volume set", volume.name)
        started = await self._gluster(host, commands.volume_start(volume.name, timeout=GLUSTER_TIMEOUT))
        _expect(started, "volume start", volume.name)
        timing.finished = time.monotonic() - timing.started
        timing.gluster = timing.finished - timing.bricks
        return timing

    async def _make_brick(self, spec: BrickSpec) -> None:
        image = image_path(spec.device, spec.brick)
        mounted = await self._run(spec.node.manage, commands.is_mounted(spec.mount_point), check=False) == 0
        if not mounted:
            await self._run(spec.node.manage, commands.mkdir(spec.mount_point))
            await self._run(spec.node.manage, commands.create_image(image, spec.brick.size))
            await self._run(spec.node.manage, commands.tag_file(image, IMAGE_VOLUME_XATTR, spec.volume))
            await self._run(spec.node.manage, commands.make_xfs(image, arbiter=spec.brick.arbiter))
            await self._run(spec.node.manage, commands.mount_loop(image, spec.mount_point))
        await self._run(spec.node.manage, commands.mkdir(spec.path))

    # --- delete ---------------------------------------------------------------------------------

    async def delete(self, volume: Volume, *, missing_ok: bool = False) -> Timing:
        timing = Timing(started=time.monotonic())
        specs = self.specs(volume)
        host = specs[0].node.manage
        info = await self._gluster(host, commands.volume_info(volume.name, timeout=GLUSTER_TIMEOUT))
        if info.ok:
            stopped = await self._gluster(host, commands.volume_stop(volume.name, timeout=GLUSTER_TIMEOUT, force=True))
            if not stopped.ok and not (stopped.missing or stopped.not_started):
                raise FloorError(f"volume stop {volume.name}: {stopped.message}")
            deleted = await self._gluster(host, commands.volume_delete(volume.name, timeout=GLUSTER_TIMEOUT))
            if not deleted.ok and not deleted.missing:
                raise FloorError(f"volume delete {volume.name}: {deleted.message}")
        elif not (missing_ok and info.missing):
            raise FloorError(f"volume info {volume.name}: {info.message}")
        timing.gluster = time.monotonic() - timing.started
        await _all(self._remove_brick(spec) for spec in specs)
        timing.finished = time.monotonic() - timing.started
        timing.bricks = timing.finished - timing.gluster
        return timing

    async def _remove_brick(self, spec: BrickSpec) -> None:
        host = spec.node.manage
        if await self._run(host, commands.is_mounted(spec.mount_point), check=False) == 0:
            await self._run(host, commands.umount(spec.mount_point))
        await self._run(host, commands.remove_file(image_path(spec.device, spec.brick)))
        await self._run(host, commands.remove_dir(spec.mount_point), check=False)

    # --- plumbing -------------------------------------------------------------------------------

    async def _run(self, host: str, argv: commands.Argv, *, check: bool = True) -> int:
        result = await self._executor.run(host, argv, timeout=COMMAND_TIMEOUT, check=check)
        return result.exit_status

    async def _gluster(self, host: str, argv: commands.Argv) -> OpResult:
        delay = 0.25
        for _ in range(BUSY_RETRIES + 1):
            completed = await self._executor.run(host, argv, timeout=GLUSTER_TIMEOUT + 30, check=False)
            result = parse_op_result(completed.stdout, completed.stderr)
            if not result.busy:
                return result
            self.busy_retries += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 8.0)
        raise FloorError(f"gluster stayed busy: {' '.join(argv)}")


def _expect(result: OpResult, what: str, name: str) -> None:
    if not result.ok and not result.already_started:
        raise FloorError(f"{what} {name}: {result.message}")


async def _all(work: Iterable[Awaitable[None]]) -> None:
    results = await asyncio.gather(*work, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
