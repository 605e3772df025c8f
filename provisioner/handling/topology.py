"""Topology requests: load a cluster, add / remove / enable / disable a node or device, evacuate.

Removal is refused while bricks remain on what leaves, unless the request asks to evacuate: then
every brick moves off first, one at a time, with ``replace-brick … commit force``. Each move is
recorded before its node work and again once done (``Volume.replacing``), so a crash at any instant
leaves a record that a redelivered or repeated request resumes. New nodes are peer-probed and new
devices prepared; nodes that leave are detached. The answer is always the cluster as it is now.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging

from provisioner import metrics
from provisioner.delivery.outcome import IntentWriter, Outcome, progress, succeeded
from provisioner.domain import Cluster, ClusterId
from provisioner.errors import InvalidTopology, NodeUnreachable, ProvisionerError
from provisioner.events import models
from provisioner.events.envelope import Event
from provisioner.handling.retry import Retrying
from provisioner.planning import evacuation
from provisioner.planning.allocator import Limits
from provisioner.planning.clusters import changed, cluster_from, with_enabled
from provisioner.planning.placement import Placement
from provisioner.state import DesiredState, StateChange
from provisioner.storage.operations import VolumeOperations

log = logging.getLogger(__name__)


class TopologyChanges:
    def __init__(
        self,
        state: DesiredState,
        operations: VolumeOperations,
        *,
        retrying: Retrying,
        placement: Placement,
        placement_locks: dict[ClusterId, asyncio.Lock],
        limits: Limits,
        source: str,
    ) -> None:
        """``placement_locks`` are the worker's: moves are planned under the same per-cluster lock as
        new volumes, so each plan sees the space the previous one took."""
        self._state = state
        self._ops = operations
        self._retrying = retrying
        self._placement = placement
        self._placement_locks = placement_locks
        self._limits = limits
        self._source = source

    def load(self, event: Event, data: models.LoadTopology) -> Outcome:
        cluster = cluster_from(data)
        known = {d.id for n in cluster.nodes for d in n.devices}
        for volume in self._state.volumes_of(cluster.id):
            missing = [b for b in volume.bricks if b.device not in known]
            if missing:
                raise InvalidTopology(
                    f"the new topology drops device {missing[0].device}, which holds a brick of volume "
                    f"{volume.name}; delete or move the volume first",
                    reason="DeviceInUse",
                )
        return self._topology_now(event, cluster)

    async def change(
        self,
        event: Event,
        data: models.AddNode | models.NodeRef | models.AddDevice | models.DeviceRef,
        intent: IntentWriter,
    ) -> Outcome:
        """Add, remove, enable or disable a node or device. Removal is refused while bricks remain,
        unless the request asks to evacuate: then every brick moves off first (``_evacuate``)."""
        cluster = self._state.require_cluster(data.cluster)
        action = event.type.split(".")[3]  # add, remove, enable, disable
        evacuate = isinstance(data, models.NodeRef | models.DeviceRef) and data.evacuate
        if evacuate and action != "remove":
            raise InvalidTopology(f"evacuate applies to remove only, not to {action}")
        if action in ("enable", "disable"):
            assert isinstance(data, models.NodeRef | models.DeviceRef)
            new = with_enabled(cluster, data, enabled=action == "enable")
        else:
            new = changed(cluster, data)
        if evacuate:
            await self._evacuate(event, cluster, new, intent)
        used = {b.device for v in self._state.volumes_of(cluster.id) for b in v.bricks}
        for node in cluster.nodes:
            for device in node.devices:
                if device.id in used and not any(device.id == d.id for n in new.nodes for d in n.devices):
                    raise InvalidTopology(
                        f"{device.name} on {node.manage} still holds bricks; delete or move those volumes first",
                        reason="DeviceInUse",
                    )
        before = {n.id for n in cluster.nodes}
        after = {n.id for n in new.nodes}
        for node in new.nodes:
            if node.id not in before:
                await self._retrying(
                    functools.partial(self._ops.probe, cluster.nodes, node), what=f"probe {node.manage}"
                )
            old_devices = {d.id for n in cluster.nodes for d in n.devices}
            for device in node.devices:
                if device.id not in old_devices:
                    prepare = functools.partial(self._ops.prepare_device, node, device)
                    await self._retrying(prepare, what=f"prepare {device.name}")
        for node in cluster.nodes:
            if node.id not in after:
                others = [n for n in cluster.nodes if n.id != node.id]
                await self._retrying(functools.partial(self._ops.detach, others, node), what=f"detach {node.manage}")
        return self._topology_now(event, new)

    async def _evacuate(self, event: Event, cluster: Cluster, remaining: Cluster, intent: IntentWriter) -> None:
        """Move every brick off the devices that ``remaining`` lacks, one brick at a time.

        Each move is recorded (the volume listing both bricks and the pair) before its node work and
        again once done, so a crash at any instant leaves a record that a redelivered or repeated
        request resumes: moves already recorded are finished first, then the rest are planned.
        Refusals (a distribute volume, no room) come before any node is touched.
        """
        leaving = {d.id for n in cluster.nodes for d in n.devices} - {d.id for n in remaining.nodes for d in n.devices}
        gone = frozenset({n.id for n in cluster.nodes} - {n.id for n in remaining.nodes})
        volumes = evacuation.affected(self._state.volumes_of(cluster.id), leaving)
        evacuation.check_movable(volumes, leaving)
        for volume in volumes:
            for move in evacuation.pending(volume):
                log.info("%s: resuming the move of brick %s to %s", volume.name, move.old.id, move.new.id)
                await self._move(cluster, move, gone, intent)
        async with self._placement_locks.setdefault(cluster.id, asyncio.Lock()):
            placeable, _ = self._placement.placeable(cluster)  # no new brick on a node that is down
            with metrics.step("allocate"):
                moves = evacuation.plan_evacuation(
                    self._state.volumes_of(cluster.id), placeable, self._state.usage(cluster.id), leaving, self._limits
                )
        for number, move in enumerate(moves, 1):
            planned = evacuation.moving(self._state.volumes[move.volume], move)
            await intent.record([StateChange.put_volume(planned)])
            await self._move(cluster, move, gone, intent)
            moved = f"brick {move.old.id} moved to {move.new.id} ({number} of {len(moves)})"
            log.info("%s: %s", planned.name, moved)
            await progress(event, intent, planned, "brick_moved", moved, source=self._source)

    async def _move(self, cluster: Cluster, move: evacuation.Move, gone: frozenset[str], intent: IntentWriter) -> None:
        """One recorded move: build the new brick, swap it in (``replace-brick … commit force``),
        destroy the old one, record the volume with the new brick in the old one's place.

        The old brick of a node that is leaving and unreachable (a dead node) is left where it is:
        the node leaves the pool, and a dead node must not block its own removal."""
        volume = self._state.volumes[move.volume]  # lists both bricks
        old_host = cluster.node(move.old.node).manage
        try:
            healed = functools.partial(self._ops.ensure_healed, cluster, volume, move.old)
            await self._retrying(healed, what=f"wait for {volume.name} to heal")
            with metrics.step("brick_create"):
                build = functools.partial(self._ops.create_brick, cluster, volume, move.new)
                await self._retrying(build, what=f"create brick {move.new.id} of {volume.name}")
            swap = functools.partial(self._ops.replace_brick, cluster, volume, move.old, move.new)
            await self._retrying(swap, what=f"replace brick {move.old.id} of {volume.name}")
        except ProvisionerError:
            await self._abandon(cluster, move, intent)
            raise

        async def destroy_old() -> None:
            try:
                await self._ops.destroy_brick(cluster, volume, move.old)
            except NodeUnreachable as e:
                if move.old.node not in gone:
                    raise
                log.warning("brick %s stays on %s, which leaves the cluster unreachable: %s", move.old.id, old_host, e)

        await self._retrying(destroy_old, what=f"destroy brick {move.old.id} on {old_host}")
        await intent.record([StateChange.put_volume(evacuation.moved(self._state.volumes[move.volume], move))])

    async def _abandon(self, cluster: Cluster, move: evacuation.Move, intent: IntentWriter) -> None:
        """Undo a move that failed before gluster took the new brick: destroy it, drop it from the
        record. If gluster lists it, or the nodes cannot tell or clean, the record stays for a retry."""
        volume = self._state.volumes[move.volume]
        try:
            if await self._ops.has_brick(cluster, volume, move.new, last=move.old):
                return
            destroy = functools.partial(self._ops.destroy_brick, cluster, volume, move.new)
            await self._retrying(destroy, what=f"remove the unused brick {move.new.id}")
        except ProvisionerError as e:
            log.error("%s: the move of brick %s stays recorded for a repeated request: %s", volume.name, move.old.id, e)
            return
        await intent.record([StateChange.put_volume(evacuation.abandoned(volume, move))])

    def _topology_now(self, event: Event, cluster: Cluster) -> Outcome:
        """The answer to any topology request: the cluster as it is now, recorded in the state topic."""
        now = models.TopologyLoaded(
            request_id=event.id,
            cluster=cluster.id,
            nodes=len(cluster.nodes),
            devices=sum(len(n.devices) for n in cluster.nodes),
        )
        outcome = succeeded(event, now, source=self._source, key=cluster.id, subject=cluster.id)
        return dataclasses.replace(outcome, changes=[StateChange.put_cluster(cluster)])
