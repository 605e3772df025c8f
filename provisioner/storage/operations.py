"""The gluster volume lifecycle on the nodes: bricks, create, options, start; stop, delete, destroy.

Each public operation is idempotent and converges: re-running it after a crash at any step finishes
the job (a volume that already exists with our id is adopted; one that is already gone counts as
deleted). Nothing here retries: a temporary failure (a node that does not answer, glusterd busy)
is raised as its type, and the request's one retry owner (``handling.retry``) decides. The gluster
CLI runs on the manage host of the volume's first node that answers (``storage.gluster``).
Brick moves for evacuation are in ``storage.moves``.

Its length (over 300 lines) is the lifecycle's steps side by side, create and delete mirrored, so
that each step's inverse sits next to it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence

from provisioner import metrics
from provisioner.domain import Brick, BrickId, Cluster, Device, DeviceId, Node, NodeId, Volume, VolumeId
from provisioner.errors import (
    GlusterError,
    InvalidOption,
    PeerDetachFailed,
    PeerProbeFailed,
    PermanentError,
    ProvisionerError,
    TemporaryError,
    VolumeConflict,
    VolumeNameTaken,
    VolumeNotFound,
)
from provisioner.executor import CommandResult, Executor
from provisioner.settings import StorageSettings
from provisioner.storage import commands
from provisioner.storage.backends import Backend, BrickSpec, DeviceSpec, backend_for
from provisioner.storage.gluster import Answer, GlusterCli
from provisioner.storage.parsing import UnparsableOutput, VolumeInfo, parse_volume_info
from provisioner.storage.tags import ID_OPTION, OWNER_OPTION, volume_options

log = logging.getLogger(__name__)


def brick_specs(
    cluster: Cluster, volume: Volume, bricks: Sequence[Brick] | None = None, *, owner: str = ""
) -> list[BrickSpec]:
    specs = []
    for brick in bricks if bricks is not None else volume.bricks:
        node, device = cluster.device(brick.device)
        specs.append(
            BrickSpec(
                node=node,
                device=device,
                brick=brick,
                volume=volume.id,
                brick_root=cluster.brick_root,
                gid=volume.gid,
                snapshot_factor=volume.snapshot_factor,
                owner=owner,
            )
        )
    return specs


def mount_source(cluster: Cluster, volume: Volume) -> tuple[str, list[str]]:
    """``host:/name`` for the FUSE client, and as volfile backups the other storage hosts, then
    every further storage hostname of the volume's nodes."""
    hosts = storage_hosts(cluster, volume)
    more = [h for node_id in _node_ids(volume) for h in cluster.node(node_id).storage_alternates if h not in hosts]
    return f"{hosts[0]}:/{volume.name}", [*hosts[1:], *dict.fromkeys(more)]


def _node_ids(volume: Volume) -> list[NodeId]:
    return list(dict.fromkeys(b.node for b in volume.bricks))


def storage_hosts(cluster: Cluster, volume: Volume) -> list[str]:
    """The storage hostnames of the volume's nodes, in brick order, each once."""
    hosts: list[str] = []
    for brick in volume.bricks:
        host = cluster.node(brick.node).storage
        if host not in hosts:
            hosts.append(host)
    return hosts


def manage_hosts(cluster: Cluster, volume: Volume) -> list[str]:
    """Manage hosts of the volume's nodes, in brick order: where its gluster CLI calls run."""
    hosts: list[str] = []
    for brick in volume.bricks:
        host = cluster.node(brick.node).manage
        if host not in hosts:
            hosts.append(host)
    return hosts


class VolumeOperations:
    def __init__(self, executor: Executor, settings: StorageSettings, *, owner: str = "") -> None:
        """``owner`` (the deployment's state topic) is written on every brick and volume made here, so
        ``reconcile`` can tell this deployment's orphans from another's on shared nodes."""
        self._executor = executor
        self._settings = settings
        self.owner = owner
        self.cli = GlusterCli(executor, timeout=settings.gluster_timeout, concurrency=settings.gluster_concurrency)

    def backend(self, device: Device) -> Backend:
        settings = self._settings
        return backend_for(device.backend, self._executor, timeout=settings.command_timeout, fstab=settings.fstab)

    def specs(self, cluster: Cluster, volume: Volume, bricks: Sequence[Brick] | None = None) -> list[BrickSpec]:
        return brick_specs(cluster, volume, bricks, owner=self.owner)

    async def run(self, host: str, argv: commands.Argv, *, check: bool = True) -> CommandResult:
        """One node command with the brick command timeout."""
        return await self._executor.run(host, argv, timeout=self._settings.command_timeout, check=check)

    # --- bricks ---------------------------------------------------------------------------------

    async def create_bricks(self, cluster: Cluster, volume: Volume, bricks: Sequence[Brick] | None = None) -> None:
        """Build the volume's bricks (or ``bricks`` of it), in parallel across nodes. On failure the
        bricks are left for ``destroy_bricks`` to clean: the caller decides between retrying and
        rolling back."""
        specs = self.specs(cluster, volume, bricks)
        results = await asyncio.gather(*(self.backend(s.device).create(s) for s in specs), return_exceptions=True)
        raise_first(results)

    async def destroy_bricks(self, cluster: Cluster, volume: Volume, bricks: Sequence[Brick] | None = None) -> None:
        specs = self.specs(cluster, volume, bricks)
        results = await asyncio.gather(*(self.backend(s.device).destroy(s) for s in specs), return_exceptions=True)
        raise_first(results)

    async def create_brick(self, cluster: Cluster, volume: Volume, brick: Brick) -> None:
        await self.create_bricks(cluster, volume, [brick])

    async def destroy_brick(self, cluster: Cluster, volume: Volume, brick: Brick) -> None:
        """Unmount and destroy one brick of ``volume``; one already gone is fine."""
        await self.destroy_bricks(cluster, volume, [brick])

    # --- gluster --------------------------------------------------------------------------------

    async def gluster(self, cluster: Cluster, volume: Volume, argv: commands.Argv) -> Answer:
        """A CLI call about ``volume``, on its nodes."""
        return await self.cli.call(manage_hosts(cluster, volume), argv, pool=cluster.id, what=volume.name)

    async def create_volume(self, cluster: Cluster, volume: Volume) -> None:
        """``volume create`` (adopting a volume of ours that already exists), options, ``start``."""
        timeout = self.cli.timeout
        bricks = [commands.brick_argument(spec.node.storage, spec.path) for spec in self.specs(cluster, volume)]
        created = await self.gluster(
            cluster, volume, commands.volume_create(volume.name, volume.durability, bricks, timeout=timeout)
        )
        if not created.ok:
            if not created.verdict.exists:
                raise GlusterError(f"volume create {volume.name}: {created.message}")
            await self._adopt(cluster, volume)
        for key, value in (*volume_options(volume.id, self.owner), *volume.options):
            result = await self.gluster(cluster, volume, commands.volume_set(volume.name, key, value, timeout=timeout))
            if not result.ok:
                raise InvalidOption(f"volume set {volume.name} {key}: {result.message}")
        with metrics.step("gluster_start"):
            started = await self.gluster(cluster, volume, commands.volume_start(volume.name, timeout=timeout))
        if not started.ok and not started.verdict.already_started:
            raise GlusterError(f"volume start {volume.name}: {started.message}")
        await self.sync_bricks(self.specs(cluster, volume))

    async def sync_bricks(self, specs: Sequence[BrickSpec]) -> None:
        """Flush each brick's filesystem (syncfs), in parallel: gluster has just written the brick
        root's ``trusted.glusterfs.volume-id``, and a node that loses power before XFS commits its
        log would come back with a brick glusterd refuses to start."""
        synced = await asyncio.gather(
            *(self.run(s.node.manage, commands.sync_filesystem(s.mount_point)) for s in specs), return_exceptions=True
        )
        raise_first(synced)

    async def _adopt(self, cluster: Cluster, volume: Volume) -> None:
        info = await self.volume_info(cluster, volume)
        owner = info.options.get(ID_OPTION) if info else None
        if info is None or owner not in (None, volume.id):
            raise VolumeNameTaken(
                f"a gluster volume named {volume.name} already exists and belongs to {owner or 'someone else'}"
            )

    async def delete_volume(self, cluster: Cluster, volume: Volume) -> bool:
        """Stop and delete our gluster volume; returns whether gluster still had it.

        A volume of that name that is not ours (another id, or other bricks) is never touched.
        """
        info = await self.volume_info(cluster, volume)
        if info is None:
            return False
        if not _owned(info, self.specs(cluster, volume), volume):
            owner = info.options.get(ID_OPTION)
            log.warning("gluster volume %s is not ours (owner %s); leaving it alone", volume.name, owner)
            return False
        return await self._stop_and_delete(manage_hosts(cluster, volume), volume.name, pool=cluster.id)

    async def _stop_and_delete(self, hosts: Sequence[str], name: str, *, pool: str) -> bool:
        timeout = self.cli.timeout
        with metrics.step("gluster_stop"):
            stop = commands.volume_stop(name, timeout=timeout, force=True)
            stopped = await self.cli.call(hosts, stop, pool=pool, what=name)
        if not stopped.ok and not (stopped.verdict.missing or stopped.verdict.not_started):
            raise GlusterError(f"volume stop {name}: {stopped.message}")
        deleted = await self.cli.call(hosts, commands.volume_delete(name, timeout=timeout), pool=pool, what=name)
        if not deleted.ok and not deleted.verdict.missing:
            raise GlusterError(f"volume delete {name}: {deleted.message}")
        return deleted.ok

    async def add_bricks(self, cluster: Cluster, volume: Volume, added: Sequence[Brick]) -> int:
        """Add to the gluster volume those of ``added`` (already built) it does not list yet, then
        start a rebalance; returns how many bricks joined now. Re-running after a crash adds only
        what is missing."""
        timeout = self.cli.timeout
        info = await self.volume_info(cluster, volume)
        if info is None:
            raise VolumeNotFound(f"volume {volume.name} is gone; cannot expand it")
        present = {(b.host, b.path) for b in info.bricks}
        specs = self.specs(cluster, volume, added)
        missing = [
            commands.brick_argument(s.node.storage, s.path) for s in specs if (s.node.storage, s.path) not in present
        ]
        if missing:
            result = await self.gluster(
                cluster, volume, commands.volume_add_brick(volume.name, missing, timeout=timeout)
            )
            if not result.ok:
                raise GlusterError(f"volume add-brick {volume.name}: {result.message}")
            await self.sync_bricks(specs)
        rebalance = await self.gluster(cluster, volume, commands.volume_rebalance_start(volume.name, timeout=timeout))
        if not rebalance.ok and "already" not in rebalance.message.lower():
            raise GlusterError(f"volume rebalance {volume.name} start: {rebalance.message}")
        return len(missing)

    async def listed_bricks(self, cluster: Cluster, volume: Volume, added: Sequence[Brick]) -> int:
        """How many of ``added`` the gluster volume lists (0 when the volume is gone)."""
        info = await self.volume_info(cluster, volume)
        if info is None:
            return 0
        present = {(b.host, b.path) for b in info.bricks}
        return sum((s.node.storage, s.path) in present for s in self.specs(cluster, volume, added))

    async def volume_info(self, cluster: Cluster, volume: Volume) -> VolumeInfo | None:
        answer = await self.gluster(cluster, volume, commands.volume_info(volume.name, timeout=self.cli.timeout))
        if not answer.ok:
            if answer.verdict.missing:
                return None
            raise GlusterError(f"volume info {volume.name}: {answer.message}")
        found = _volumes(answer)
        return found[0] if found else None

    async def remove(self, cluster: Cluster, volume: Volume) -> bool:
        """Everything ``delete`` and rollback need: the gluster volume, then its bricks."""
        existed = await self.delete_volume(cluster, volume)
        await self.destroy_bricks(cluster, volume)
        return existed

    # --- the trusted pool and devices -------------------------------------------------------------

    async def probe(self, members: Sequence[Node], new: Node) -> None:
        """Peer-probe ``new`` into the pool from the first reachable member (already a peer is fine).

        ``new`` is reached over SSH first, which checks its host key (HostKeyRejected otherwise), and
        its glusterd must answer: the pool trusts a peer for good, so nothing unverified joins it."""
        check = commands.gluster("pool", "list", timeout=self.cli.timeout)
        answer = await self.cli.call([new.manage], check, pool="", what=f"pool of {new.manage}")
        if not answer.ok:
            raise PeerProbeFailed(f"glusterd on {new.manage} does not answer: {answer.message}")
        if not members:
            return
        argv = commands.peer_probe(new.storage, timeout=self.cli.timeout)
        result = await self.cli.call([m.manage for m in members], argv, pool="", what=f"peer {new.storage}")
        if not result.ok and "already in peer list" not in result.message:
            raise PeerProbeFailed(f"peer probe {new.storage}: {result.message}")

    async def detach(self, members: Sequence[Node], gone: Node) -> None:
        """Detach ``gone`` from the pool from another member (not being a peer any more is fine)."""
        if not members:
            return
        argv = commands.peer_detach(gone.storage, timeout=self.cli.timeout)
        result = await self.cli.call([m.manage for m in members], argv, pool="", what=f"peer {gone.storage}")
        if not result.ok and not re.search(r"not (part of|a friend|in)|does not exist", result.message):
            raise PeerDetachFailed(f"peer detach {gone.storage}: {result.message}")

    def device_spec(self, cluster: str, node: Node, device: Device, *, destroy_data: bool = False) -> DeviceSpec:
        return DeviceSpec(node=node, device=device, cluster=cluster, owner=self.owner, destroy_data=destroy_data)

    async def prepare_device(self, spec: DeviceSpec) -> int | None:
        """Make a device ready for bricks (a directory of images, or a PV and VG) and measure it:
        the bytes it offers, or None when only the topology can say (file)."""
        backend = self.backend(spec.device)
        await backend.prepare(spec)
        return await backend.measure(spec)

    async def resync_device(self, spec: DeviceSpec) -> int | None:
        """Take in a disk that grew and measure it again (Heketi's ``device resync``)."""
        backend = self.backend(spec.device)
        await backend.resync(spec)
        return await backend.measure(spec)

    # --- reconcile --------------------------------------------------------------------------------

    async def all_volumes(self, cluster: Cluster) -> list[VolumeInfo] | None:
        """Every gluster volume of the pool, from the first node that answers; None when none does."""
        argv = commands.volume_info(timeout=self.cli.timeout)
        try:
            answer = await self.cli.call([n.manage for n in cluster.nodes], argv, pool=cluster.id, what="volume info")
            if not answer.ok:
                return [] if answer.verdict.missing else None
            return _volumes(answer)
        except ProvisionerError as e:
            log.warning("cluster %s: no gluster volume list: %s", cluster.id, e)
            return None

    async def delete_orphan(self, cluster: Cluster, name: str, volume_id: str) -> None:
        """Stop and delete a gluster volume no record names, after checking again that it carries
        ``volume_id`` and this deployment's owner tag (anything else is left alone)."""
        hosts = [n.manage for n in cluster.nodes]
        answer = await self.cli.call(
            hosts, commands.volume_info(name, timeout=self.cli.timeout), pool=cluster.id, what=name
        )
        found = _volumes(answer) if answer.ok else []
        if not found:
            return  # already gone
        options = found[0].options
        if not self.owner or options.get(ID_OPTION) != volume_id or options.get(OWNER_OPTION) != self.owner:
            raise VolumeConflict(f"gluster volume {name} does not carry our id {volume_id} and owner {self.owner}")
        await self._stop_and_delete(hosts, name, pool=cluster.id)

    async def destroy_orphan_brick(self, cluster: Cluster, device_id: DeviceId, brick_id: BrickId, volume: str) -> None:
        """Unmount and destroy a brick of ours that no volume record names."""
        node, device = cluster.device(device_id)
        spec = BrickSpec(
            node=node,
            device=device,
            brick=Brick(id=brick_id, node=node.id, device=device.id, size=0, set_index=0),
            volume=VolumeId(volume),
            brick_root=cluster.brick_root,
            owner=self.owner,
        )
        await self.backend(device).destroy(spec)


def _volumes(answer: Answer) -> list[VolumeInfo]:
    try:
        return parse_volume_info(answer.stdout)
    except UnparsableOutput as e:
        raise GlusterError(f"volume info on {answer.host}: gluster's answer cannot be read: {e}") from e


def _owned(info: VolumeInfo, specs: Sequence[BrickSpec], volume: Volume) -> bool:
    """Ours if it carries our id, or (created but not yet tagged) consists of our bricks only."""
    owner = info.options.get(ID_OPTION)
    if owner is not None:
        return owner == volume.id
    ours = {(spec.node.storage, spec.path) for spec in specs}
    return bool(info.bricks) and all((b.host, b.path) in ours for b in info.bricks)


def raise_first(results: Sequence[object]) -> None:
    """Re-raise the most telling failure: permanent before temporary before anything else."""
    errors = [r for r in results if isinstance(r, BaseException)]
    if not errors:
        return
    for kind in (PermanentError, TemporaryError, ProvisionerError, BaseException):
        for error in errors:
            if isinstance(error, kind):
                raise error
