"""The gluster volume lifecycle on the nodes: bricks, create, options, start; stop, delete, destroy.

Each public operation is idempotent and converges: re-running it after a crash at any step finishes
the job (a volume that already exists with our id is adopted; one that is already gone counts as
deleted). glusterd answers "Another transaction is in progress" when two operations touch one
volume; those calls are retried with exponential backoff. The gluster CLI runs on the manage host
of the volume's first node that answers.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence

from provisioner import metrics
from provisioner.domain import Brick, BrickId, Cluster, Device, DeviceId, Node, Volume, VolumeId
from provisioner.errors import (
    GlusterBusy,
    GlusterError,
    NodeUnreachable,
    PermanentError,
    ProvisionerError,
    TemporaryError,
    VolumeConflict,
)
from provisioner.executor import Executor
from provisioner.settings import StorageSettings
from provisioner.storage import commands
from provisioner.storage.backends import Backend, BrickSpec, backend_for
from provisioner.storage.parsing import OpResult, VolumeInfo, parse_heal_info, parse_op_result, parse_volume_info
from provisioner.storage.tags import ID_OPTION, OWNER_OPTION, volume_options

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


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
    """``host:/name`` for the FUSE client and the other storage hosts as volfile backups."""
    hosts: list[str] = []
    for brick in volume.bricks:
        host = cluster.node(brick.node).storage
        if host not in hosts:
            hosts.append(host)
    return f"{hosts[0]}:/{volume.name}", hosts[1:]


class VolumeOperations:
    def __init__(
        self, executor: Executor, settings: StorageSettings, *, owner: str = "", sleep: Sleep = asyncio.sleep
    ) -> None:
        """``owner`` (the deployment's state topic) is written on every brick and volume made here, so
        ``reconcile`` can tell this deployment's orphans from another's on shared nodes."""
        self._executor = executor
        self._settings = settings
        self.owner = owner
        self._pools: dict[str, asyncio.Semaphore] = {}
        self._sleep = sleep

    def _backend(self, spec: BrickSpec) -> Backend:
        return self._backend_of(spec.device)

    def _backend_of(self, device: Device) -> Backend:
        settings = self._settings
        return backend_for(device.backend, self._executor, timeout=settings.command_timeout, fstab=settings.fstab)

    # --- bricks ---------------------------------------------------------------------------------

    async def create_bricks(self, cluster: Cluster, volume: Volume) -> None:
        """Build every brick, in parallel across nodes. On failure the bricks are left for
        ``remove`` to clean: the caller decides between retrying and rolling back."""
        specs = brick_specs(cluster, volume, owner=self.owner)
        results = await asyncio.gather(*(self._backend(s).create(s) for s in specs), return_exceptions=True)
        _raise_first(results)

    async def destroy_bricks(self, cluster: Cluster, volume: Volume) -> None:
        specs = brick_specs(cluster, volume)
        results = await asyncio.gather(*(self._backend(s).destroy(s) for s in specs), return_exceptions=True)
        _raise_first(results)

    # --- gluster --------------------------------------------------------------------------------

    async def create_volume(self, cluster: Cluster, volume: Volume) -> None:
        """``volume create`` (adopting a volume of ours that already exists), options, ``start``."""
        timeout = self._settings.gluster_timeout
        bricks = [commands.brick_argument(spec.node.storage, spec.path) for spec in brick_specs(cluster, volume)]
        argv = commands.volume_create(volume.name, volume.durability, bricks, timeout=timeout)
        created = await self._gluster(cluster, volume, argv)
        if not created.ok:
            if not created.exists:
                raise GlusterError(f"volume create {volume.name}: {created.message}")
            await self._adopt(cluster, volume)
        for key, value in (*volume_options(volume.id, self.owner), *volume.options):
            result = await self._gluster(cluster, volume, commands.volume_set(volume.name, key, value, timeout=timeout))
            if not result.ok:
                raise GlusterError(f"volume set {volume.name} {key}: {result.message}", reason="InvalidOption")
        with metrics.step("gluster_start"):
            started = await self._gluster(cluster, volume, commands.volume_start(volume.name, timeout=timeout))
        if not started.ok and not started.already_started:
            raise GlusterError(f"volume start {volume.name}: {started.message}")

    async def _adopt(self, cluster: Cluster, volume: Volume) -> None:
        info = await self.volume_info(cluster, volume)
        owner = info.options.get(ID_OPTION) if info else None
        if info is None or owner not in (None, volume.id):
            raise VolumeConflict(
                f"a gluster volume named {volume.name} already exists and belongs to {owner or 'someone else'}",
                reason="VolumeNameTaken",
            )

    async def delete_volume(self, cluster: Cluster, volume: Volume) -> bool:
        """Stop and delete our gluster volume; returns whether gluster still had it.

        A volume of that name that is not ours (another id, or other bricks) is never touched.
        """
        info = await self.volume_info(cluster, volume)
        if info is None:
            return False
        if not _owned(info, cluster, volume):
            owner = info.options.get(ID_OPTION)
            log.warning("gluster volume %s is not ours (owner %s); leaving it alone", volume.name, owner)
            return False
        return await self._stop_and_delete(_hosts_of(cluster, volume), volume.name, pool=cluster.id)

    async def _stop_and_delete(self, hosts: Sequence[str], name: str, *, pool: str) -> bool:
        timeout = self._settings.gluster_timeout
        with metrics.step("gluster_stop"):
            stop = commands.volume_stop(name, timeout=timeout, force=True)
            stopped, _ = await self._call(hosts, stop, what=name, pool=pool)
        if not stopped.ok and not (stopped.missing or stopped.not_started):
            raise GlusterError(f"volume stop {name}: {stopped.message}")
        deleted, _ = await self._call(hosts, commands.volume_delete(name, timeout=timeout), what=name, pool=pool)
        if not deleted.ok and not deleted.missing:
            raise GlusterError(f"volume delete {name}: {deleted.message}")
        return deleted.ok

    async def expand_volume(self, cluster: Cluster, volume: Volume, added: Sequence[Brick]) -> int:
        """Build the new bricks, add those gluster does not have yet, then start a rebalance;
        returns how many bricks joined the volume now.

        ``volume`` already lists ``added``; re-running after a crash adds only what is missing.
        """
        timeout = self._settings.gluster_timeout
        specs = brick_specs(cluster, volume, added, owner=self.owner)
        results = await asyncio.gather(*(self._backend(s).create(s) for s in specs), return_exceptions=True)
        _raise_first(results)
        info = await self.volume_info(cluster, volume)
        if info is None:
            raise GlusterError(f"volume {volume.name} is gone; cannot expand it", reason="VolumeNotFound")
        present = {(b.host, b.path) for b in info.bricks}
        missing = [
            commands.brick_argument(s.node.storage, s.path) for s in specs if (s.node.storage, s.path) not in present
        ]
        if missing:
            result = await self._gluster(
                cluster, volume, commands.volume_add_brick(volume.name, missing, timeout=timeout)
            )
            if not result.ok:
                raise GlusterError(f"volume add-brick {volume.name}: {result.message}")
        rebalance = await self._gluster(cluster, volume, commands.volume_rebalance_start(volume.name, timeout=timeout))
        if not rebalance.ok and "already" not in rebalance.message.lower():
            raise GlusterError(f"volume rebalance {volume.name} start: {rebalance.message}")
        return len(missing)

    async def volume_info(self, cluster: Cluster, volume: Volume) -> VolumeInfo | None:
        argv = commands.volume_info(volume.name, timeout=self._settings.gluster_timeout)
        result, stdout = await self._gluster_raw(cluster, volume, argv)
        if not result.ok:
            if result.missing:
                return None
            raise GlusterError(f"volume info {volume.name}: {result.message}")
        found = parse_volume_info(stdout)
        return found[0] if found else None

    async def remove(self, cluster: Cluster, volume: Volume) -> bool:
        """Everything ``delete`` and rollback need: the gluster volume, then its bricks."""
        existed = await self.delete_volume(cluster, volume)
        await self.destroy_bricks(cluster, volume)
        return existed

    # --- brick moves (evacuation) -----------------------------------------------------------------

    async def create_brick(self, cluster: Cluster, volume: Volume, brick: Brick) -> None:
        """Build one brick of ``volume`` (idempotent, as ``create_bricks``)."""
        [spec] = brick_specs(cluster, volume, [brick], owner=self.owner)
        await self._backend(spec).create(spec)

    async def destroy_brick(self, cluster: Cluster, volume: Volume, brick: Brick) -> None:
        """Unmount and destroy one brick of ``volume``; one already gone is fine."""
        [spec] = brick_specs(cluster, volume, [brick], owner=self.owner)
        await self._backend(spec).destroy(spec)

    async def has_brick(self, cluster: Cluster, volume: Volume, brick: Brick, *, last: Brick) -> bool:
        """Whether the gluster volume lists ``brick`` (asked on its nodes, ``last``'s node last)."""
        [spec] = brick_specs(cluster, volume, [brick], owner=self.owner)
        return (spec.node.storage, spec.path) in await self._listed(self._hosts_last(cluster, volume, last), volume)

    async def ensure_healed(self, cluster: Cluster, volume: Volume, old: Brick) -> None:
        """Refuse (temporarily) to move ``old`` while its set is still healing, so a move never takes a
        set below the copies it has: every other brick of the set must be connected with nothing left to
        heal. When ``old`` itself does not answer (its node is dead), replacing it *is* the repair, so
        only the others being connected is required."""
        info = await self._call(
            _hosts_of(cluster, volume),
            commands.volume_heal_info(volume.name, timeout=self._settings.gluster_timeout),
            what=volume.name,
            pool=cluster.id,
        )
        result, stdout = info
        if not result.ok:
            raise GlusterError(f"volume heal {volume.name} info: {result.message}")
        heals = {(b.host, b.path): b for b in parse_heal_info(stdout)}
        specs = {s.brick.id: s for s in brick_specs(cluster, volume)}
        mine = specs[old.id]
        old_heal = heals.get((mine.node.storage, mine.path))
        old_answers = old_heal is not None and old_heal.connected
        arriving = {r.new for r in volume.replacing}  # recorded, not in gluster yet
        for brick in volume.bricks:
            if brick.set_index != old.set_index or brick.id == old.id or brick.id in arriving:
                continue
            spec = specs[brick.id]
            heal = heals.get((spec.node.storage, spec.path))
            where = f"{spec.node.storage}:{spec.path}"
            if heal is None or not heal.connected:
                raise TemporaryError(
                    f"volume {volume.name}: brick {where} of the set is not connected; the move of {old.id} waits",
                    reason="HealPending",
                    delay=5.0,
                )
            if old_answers and heal.pending:
                raise TemporaryError(
                    f"volume {volume.name}: {heal.pending} entries still to heal on {where}; "
                    f"the move of {old.id} waits so the set keeps its copies",
                    reason="HealPending",
                    delay=5.0,
                )

    async def replace_brick(self, cluster: Cluster, volume: Volume, old: Brick, new: Brick) -> bool:
        """Swap ``old`` for ``new`` in the gluster volume (``replace-brick … commit force``): True when
        swapped now, False when gluster already had ``new`` in ``old``'s place (a resumed move).

        ``volume`` lists both bricks and ``new`` is built. Calls run on the volume's nodes with
        ``old``'s node last, so evacuating a dead node costs no connection attempt while another
        answers. A failure is judged by what ``volume info`` shows afterwards, not by its message:
        "does not exist" (the swap happened, its answer was lost) is success when ``new`` is listed.
        """
        hosts = self._hosts_last(cluster, volume, old)
        old_spec, new_spec = brick_specs(cluster, volume, [old, new], owner=self.owner)
        old_key, new_key = (old_spec.node.storage, old_spec.path), (new_spec.node.storage, new_spec.path)
        present = await self._listed(hosts, volume)
        if new_key in present:
            return False
        if old_key not in present:
            raise GlusterError(
                f"volume {volume.name} lists neither {':'.join(old_key)} nor {':'.join(new_key)}; "
                "its bricks changed outside the provisioner"
            )
        argv = commands.volume_replace_brick(
            volume.name,
            commands.brick_argument(*old_key),
            commands.brick_argument(*new_key),
            timeout=self._settings.gluster_timeout,
        )
        result, _ = await self._call(hosts, argv, what=volume.name, pool=cluster.id)
        if result.ok:
            return True
        if new_key in await self._listed(hosts, volume):
            return False
        if "already part of" in result.message:
            # glusterd marks the new brick's directory while staging; a try that failed later leaves the
            # mark, and gluster then refuses the directory. The brick is ours and no volume uses it: rebuild it.
            log.warning("%s: %s; rebuilding brick %s and trying again", volume.name, result.message, new.id)
            await self.destroy_brick(cluster, volume, new)
            await self.create_brick(cluster, volume, new)
            result, _ = await self._call(hosts, argv, what=volume.name, pool=cluster.id)
            if result.ok:
                return True
        raise GlusterError(f"volume replace-brick {volume.name} {':'.join(old_key)}: {result.message}")

    async def _listed(self, hosts: Sequence[str], volume: Volume) -> set[tuple[str, str]]:
        """(host, path) of every brick gluster lists for ``volume``; a volume gluster lacks is an error."""
        argv = commands.volume_info(volume.name, timeout=self._settings.gluster_timeout)
        result, stdout = await self._call(hosts, argv, what=volume.name, pool=volume.cluster)
        found = parse_volume_info(stdout) if result.ok else []
        if not found:
            if result.ok or result.missing:
                raise GlusterError(f"volume {volume.name} is gone; cannot move its bricks", reason="VolumeNotFound")
            raise GlusterError(f"volume info {volume.name}: {result.message}")
        return {(b.host, b.path) for b in found[0].bricks}

    def _hosts_last(self, cluster: Cluster, volume: Volume, last: Brick) -> list[str]:
        """The manage hosts of the volume's nodes, in brick order, with ``last``'s node moved to the end."""
        final = cluster.node(last.node).manage
        hosts: list[str] = []
        for brick in volume.bricks:
            host = cluster.node(brick.node).manage
            if host != final and host not in hosts:
                hosts.append(host)
        return [*hosts, final]

    # --- reconcile --------------------------------------------------------------------------------

    async def all_volumes(self, cluster: Cluster) -> list[VolumeInfo] | None:
        """Every gluster volume of the pool, from the first node that answers; None when none does."""
        argv = commands.volume_info(timeout=self._settings.gluster_timeout)
        try:
            hosts = [n.manage for n in cluster.nodes]
            result, stdout = await self._call(hosts, argv, what="volume info", pool=cluster.id)
        except ProvisionerError as e:
            log.warning("cluster %s: no gluster volume list: %s", cluster.id, e)
            return None
        if not result.ok:
            return [] if result.missing else None
        return parse_volume_info(stdout)

    async def delete_orphan(self, cluster: Cluster, name: str, volume_id: str) -> None:
        """Stop and delete a gluster volume no record names, after checking again that it carries
        ``volume_id`` and this deployment's owner tag (anything else is left alone)."""
        hosts = [n.manage for n in cluster.nodes]
        argv = commands.volume_info(name, timeout=self._settings.gluster_timeout)
        result, stdout = await self._call(hosts, argv, what=name, pool=cluster.id)
        found = parse_volume_info(stdout) if result.ok else []
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
        await self._backend(spec).destroy(spec)

    # --- plumbing -------------------------------------------------------------------------------

    async def _gluster(self, cluster: Cluster, volume: Volume, argv: commands.Argv) -> OpResult:
        result, _ = await self._gluster_raw(cluster, volume, argv)
        return result

    async def _gluster_raw(self, cluster: Cluster, volume: Volume, argv: commands.Argv) -> tuple[OpResult, str]:
        return await self._call(_hosts_of(cluster, volume), argv, what=volume.name, pool=cluster.id)

    async def _call(
        self, hosts: Sequence[str], argv: commands.Argv, *, what: str, pool: str = ""
    ) -> tuple[OpResult, str]:
        """A gluster CLI call on the first reachable of ``hosts``, retried while glusterd is busy; at
        most ``storage.gluster_concurrency`` run at once per ``pool`` (the cluster: one trusted pool)."""
        delay = 0.25
        for attempt in range(self._settings.busy_retries + 1):
            bound = self._pools.setdefault(pool, asyncio.Semaphore(self._settings.gluster_concurrency))
            async with bound:
                result, stdout = await self._on_any_node(hosts, argv)
            if not result.busy:
                if result.unreachable:
                    raise TemporaryError(
                        f"{' '.join(argv[4:6])} {what}: {result.message}",
                        reason="NodeUnreachable",
                        delay=5.0,
                    )
                return result, stdout
            log.info("gluster busy on %s (attempt %d): %s", what, attempt + 1, result.message)
            await self._sleep(delay)
            delay = min(delay * 2, 8.0)
        raise GlusterBusy(f"gluster kept answering busy for {what}: {result.message}", delay=10.0)

    async def _on_any_node(self, hosts: Sequence[str], argv: commands.Argv) -> tuple[OpResult, str]:
        last: NodeUnreachable | None = None
        for host in hosts:
            try:
                completed = await self._executor.run(
                    host, argv, timeout=self._settings.gluster_timeout + 30, check=False
                )
            except NodeUnreachable as e:
                last = e
                continue
            return parse_op_result(completed.stdout, completed.stderr), completed.stdout
        if last is None:
            raise GlusterError("no node to run the gluster CLI on", reason="NotEnoughNodes")
        raise last

    # --- the trusted pool and devices -------------------------------------------------------------

    async def probe(self, members: Sequence[Node], new: Node) -> None:
        """Peer-probe ``new`` into the pool from the first reachable member (already a peer is fine)."""
        if not members:
            return
        argv = commands.peer_probe(new.storage, timeout=self._settings.gluster_timeout)
        result, _ = await self._call([m.manage for m in members], argv, what=f"peer {new.storage}")
        if not result.ok and "already in peer list" not in result.message:
            raise GlusterError(f"peer probe {new.storage}: {result.message}", reason="PeerProbeFailed")

    async def detach(self, members: Sequence[Node], gone: Node) -> None:
        """Detach ``gone`` from the pool from another member (not being a peer any more is fine)."""
        if not members:
            return
        argv = commands.peer_detach(gone.storage, timeout=self._settings.gluster_timeout)
        result, _ = await self._call([m.manage for m in members], argv, what=f"peer {gone.storage}")
        if not result.ok and not re.search(r"not (part of|a friend|in)|does not exist", result.message):
            raise GlusterError(f"peer detach {gone.storage}: {result.message}", reason="PeerDetachFailed")

    async def prepare_device(self, node: Node, device: Device) -> None:
        """Make a new device ready for bricks: a directory of images (file), a PV and VG (lvm)."""
        await self._backend_of(device).prepare(node, device)


def _hosts_of(cluster: Cluster, volume: Volume) -> list[str]:
    """Manage hosts of the volume's nodes, in brick order: where its gluster CLI calls run."""
    hosts: list[str] = []
    for brick in volume.bricks:
        host = cluster.node(brick.node).manage
        if host not in hosts:
            hosts.append(host)
    return hosts


def _owned(info: VolumeInfo, cluster: Cluster, volume: Volume) -> bool:
    """Ours if it carries our id, or (created but not yet tagged) consists of our bricks only."""
    owner = info.options.get(ID_OPTION)
    if owner is not None:
        return owner == volume.id
    ours = {(spec.node.storage, spec.path) for spec in brick_specs(cluster, volume)}
    return bool(info.bricks) and all((b.host, b.path) in ours for b in info.bricks)


def _raise_first(results: Sequence[object]) -> None:
    """Re-raise the most telling failure: permanent before temporary before anything else."""
    errors = [r for r in results if isinstance(r, BaseException)]
    if not errors:
        return
    for kind in (PermanentError, TemporaryError, ProvisionerError, BaseException):
        for error in errors:
            if isinstance(error, kind):
                raise error
