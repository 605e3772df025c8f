"""Turns one validated request into node work and an outcome: a result event plus state changes.

The worker knows nothing about Kafka. The caller publishes the outcome, the state changes and the
input offset in one transaction. Before any node work on a new volume, the worker records the
volume as ``creating`` through ``IntentWriter``, so a crash at any later instant leaves state that
names every brick it may have made: a redelivered request resumes those exact bricks, and nothing
on a node is ever unowned.

Temporary failures are retried with exponential backoff up to ``worker.max_attempts``; then, or on a
permanent failure, a half-made volume is rolled back and the request is answered as failed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from provisioner import evacuation, metrics
from provisioner.allocator import Limits, PlacementRequest, ZoneChecking, plan_volume
from provisioner.capacity import ObservedSpace
from provisioner.domain import (
    Cluster,
    ClusterId,
    Disperse,
    Durability,
    Replicate,
    RequestId,
    Volume,
    VolumeId,
    VolumeStatus,
    brick_mount_point,
    derive_id,
    volume_name_for,
)
from provisioner.errors import (
    InvalidTopology,
    NoCapacity,
    NodeUnreachable,
    PermanentError,
    ProvisionerError,
    TemporaryError,
    UnknownCluster,
    VolumeConflict,
    VolumeNotFound,
)
from provisioner.events import models
from provisioner.events.envelope import Event, new_event
from provisioner.expansion import plan_expansion
from provisioner.kube import names
from provisioner.settings import Settings
from provisioner.state import DesiredState, StateChange
from provisioner.storage.operations import VolumeOperations, mount_source
from provisioner.topology import changed, cluster_from, with_enabled

log = logging.getLogger(__name__)
T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


class ClaimPublisher(Protocol):
    """The Kubernetes objects of claims (``provisioner.kube.objects.KubeObjects``); every call idempotent."""

    async def claim_exists(self, claim: models.ClaimRef) -> bool: ...
    async def provisioning(self, spec: models.ClaimVolume) -> None: ...
    async def publish(self, spec: models.ClaimVolume, volume: models.VolumeOut) -> str: ...
    async def withdraw(self, objects: models.ClaimObjects) -> None: ...
    async def resized(self, resize: models.ClaimResize, size: int) -> None: ...
    async def event(self, claim: models.ClaimRef, reason: str, message: str, *, warning: bool = False) -> None: ...


class NodeHealthView(Protocol):
    """Which storage nodes are down now (``provisioner.health.NodeHealth``); placement avoids them."""

    def down(self, cluster: str) -> Mapping[str, str]:
        """The enabled nodes of ``cluster`` that are down: manage host -> why."""
        ...


class NothingDown:
    """The health view of a worker without a prober: every node counts as up."""

    def down(self, cluster: str) -> Mapping[str, str]:
        return {}


class IntentWriter(Protocol):
    async def record(self, changes: list[StateChange]) -> None:
        """Durably publish state changes now (before node work), and apply them locally."""
        ...

    async def progress(self, event: Event, key: str) -> None:
        """Publish a progress event (not a result) now."""
        ...


@dataclass(frozen=True, slots=True)
class Outcome:
    result: Event
    key: str
    changes: list[StateChange]


class Worker:
    def __init__(
        self,
        state: DesiredState,
        operations: VolumeOperations,
        settings: Settings,
        *,
        claims: ClaimPublisher | None = None,
        sleep: Sleep = asyncio.sleep,
        health: NodeHealthView | None = None,
        observed: ObservedSpace | None = None,
    ) -> None:
        self._state = state
        self._health = health or NothingDown()
        self._observed = observed or ObservedSpace()  # the devices' room as the nodes report it
        # per cluster: (cluster, down hosts, the cluster without them) of the last plan with nodes down
        self._placeable_cache: dict[ClusterId, tuple[Cluster, frozenset[str], Cluster]] = {}
        self._claims = claims
        self._ops = operations
        self._settings = settings
        self._sleep = sleep
        storage = settings.storage
        self._placement_locks: dict[ClusterId, asyncio.Lock] = {}
        self._limits = Limits(
            min_brick=storage.min_brick_size,
            max_brick=storage.max_brick_size,
            max_bricks=storage.max_bricks_per_volume,
        )

    def resource_of(self, event: Event) -> str | None:
        """What a request works on, for the lane: requests on one volume run one after another,
        requests on different volumes concurrently. ``None`` (topology changes) is a barrier."""
        match event.data:
            case models.ProvisionVolume() as data:
                return data.name or volume_name_for(VolumeId(data.volume_id or derive_id("volume", event.id)))
            case models.DeleteVolume() | models.ExpandVolume() as data:
                if data.name:
                    return data.name
                volume = self._state.volumes.get(VolumeId(data.volume_id or ""))
                return volume.name if volume else data.volume_id
        return None

    async def handle(self, event: Event, intent: IntentWriter) -> Outcome:
        """Always returns an outcome; only a bug or cancellation escapes as an exception."""
        started = time.monotonic()
        kind = models.REQUEST_KINDS.get(event.type, "unknown")
        try:
            match event.data:
                case models.ProvisionVolume() as data:
                    outcome = await self._provision(event, data, intent)
                case models.DeleteVolume() as data:
                    outcome = await self._delete(event, data)
                case models.ExpandVolume() as data:
                    outcome = await self._expand(event, data, intent)
                case models.LoadTopology() as data:
                    outcome = self._load_topology(event, data)
                case models.AddNode() | models.NodeRef() | models.AddDevice() | models.DeviceRef() as data:
                    outcome = await self._change_topology(event, data, intent)
                case _:
                    raise PermanentError(f"no handler for {event.type}", reason="UnknownType")
        except ProvisionerError as e:
            outcome = self._failed(event, e, cluster=getattr(event.data, "cluster", None))
        succeeded = ".succeeded." in outcome.result.type
        metrics.REQUESTS_DONE.labels(
            kind,
            "succeeded" if succeeded else "failed",
            "" if succeeded else getattr(outcome.result.data, "reason", ""),
        ).inc()
        metrics.REQUEST_SECONDS.labels(kind).observe(time.monotonic() - started)
        return outcome

    # --- provision ------------------------------------------------------------------------------

    async def _provision(self, event: Event, data: models.ProvisionVolume, intent: IntentWriter) -> Outcome:
        """Provision; for a claim, also its PV, Endpoints and Service, and a ProvisioningFailed event on failure."""
        if data.kubernetes is None:
            return await self._provision_volume(event, data, intent)
        claims = self._kubernetes()
        try:
            outcome = await self._provision_volume(event, data, intent)
        except ProvisionerError as e:
            await claims.event(data.kubernetes.claim, "ProvisioningFailed", f"{e.reason}: {e}", warning=True)
            raise
        if isinstance(outcome.result.data, models.RequestFailed):
            failed = outcome.result.data
            await claims.event(
                data.kubernetes.claim, "ProvisioningFailed", f"{failed.reason}: {failed.message}", warning=True
            )
        return outcome

    async def _provision_volume(self, event: Event, data: models.ProvisionVolume, intent: IntentWriter) -> Outcome:
        cluster = self._cluster(data.cluster)
        volume_id = VolumeId(data.volume_id or derive_id("volume", event.id))
        name = data.name or volume_name_for(volume_id)
        existing = self._state.volumes.get(volume_id)
        if existing is not None and existing.status is VolumeStatus.ONLINE:
            return await self._published(event, data, existing)  # the same request again: the same answer
        if existing is not None and existing.status is VolumeStatus.DELETING:
            raise VolumeConflict(f"volume {volume_id} is being deleted")
        holder = self._state.volume_named(cluster.id, name)
        if holder is not None and holder.id != volume_id:
            raise VolumeConflict(f"volume name {name} is taken by volume {holder.id}", reason="VolumeNameTaken")

        if existing is None and data.kubernetes is not None:
            await self._claim_still_wanted(data.kubernetes)
        if existing is None:
            # Placement is serialized per cluster: each plan must see the space the previous took.
            async with self._placement_locks.setdefault(cluster.id, asyncio.Lock()):
                volume = await self._plan(event, data, cluster, volume_id, name, intent)
        else:
            volume = existing  # resume a create interrupted by a crash: the same bricks

        async def build() -> None:
            with metrics.step("brick_create"):
                await self._ops.create_bricks(cluster, volume)
            await self._progress(event, intent, volume, "bricks_ready", f"{len(volume.bricks)} bricks ready")
            with metrics.step("gluster_create"):
                await self._ops.create_volume(cluster, volume)

        try:
            await self._retrying(build, what=f"provision {volume.name}")
        except ProvisionerError as failure:
            return await self._roll_back(event, volume, failure)
        online = dataclasses.replace(volume, status=VolumeStatus.ONLINE)
        try:
            outcome = await self._published(event, data, online)
        except ProvisionerError as failure:
            if data.kubernetes is not None and failure.reason != "PersistentVolumeTaken":
                await self._withdraw(_objects_of(data.kubernetes))
            return await self._roll_back(event, volume, failure)
        return dataclasses.replace(outcome, changes=[StateChange.put_volume(online)])

    async def _claim_still_wanted(self, spec: models.ClaimVolume) -> None:
        """No storage for a claim that is gone: a stale or duplicate request must not leak a volume."""
        claims = self._kubernetes()
        claim = spec.claim
        with metrics.step("kubernetes"):
            exists = await self._retrying(lambda: claims.claim_exists(claim), what=f"read claim {claim.name}")
        if not exists:
            raise PermanentError(
                f"claim {claim.namespace}/{claim.name} (uid {claim.uid}) no longer exists; nothing provisioned",
                reason="ClaimGone",
            )
        await claims.provisioning(spec)

    async def _published(self, event: Event, data: models.ProvisionVolume, volume: Volume) -> Outcome:
        """The success outcome, after creating the claim's Kubernetes objects when the request names a claim."""
        outcome = self._provisioned(event, volume)
        spec = data.kubernetes
        if spec is None:
            return outcome
        claims = self._kubernetes()
        assert isinstance(outcome.result.data, models.VolumeProvisioned)
        out = outcome.result.data.volume
        with metrics.step("kubernetes"):
            pv = await self._retrying(lambda: claims.publish(spec, out), what=f"publish the PV of {volume.name}")
        return self._provisioned(event, volume, persistent_volume=pv)

    async def _roll_back(self, event: Event, volume: Volume, failure: ProvisionerError) -> Outcome:
        cluster = self._cluster(volume.cluster)
        try:
            with metrics.step("rollback"):
                await self._retrying(lambda: self._ops.remove(cluster, volume), what=f"roll back {volume.name}")
        except ProvisionerError as e:
            # Keep the 'creating' record: the volume stays owned, and reconcile finishes the cleanup.
            log.error("rollback of %s failed, its record is kept for reconcile: %s", volume.name, e)
            return self._failed(event, failure, cluster=volume.cluster, volume=volume.id)
        outcome = self._failed(event, failure, cluster=volume.cluster, volume=volume.id)
        return dataclasses.replace(outcome, changes=[StateChange.delete_volume(volume.id)])

    async def _plan(
        self,
        event: Event,
        data: models.ProvisionVolume,
        cluster: Cluster,
        volume_id: VolumeId,
        name: str,
        intent: IntentWriter,
    ) -> Volume:
        """Place the bricks and durably record the volume as ``creating`` before any node work."""
        started = time.monotonic()
        request = PlacementRequest(
            volume=volume_id,
            size=data.size,
            durability=data.durability.to_domain(),
            zone_checking=ZoneChecking(data.zone_checking),
        )
        usage = self._state.usage(cluster.id)
        plan = self._placed(
            cluster,
            lambda placeable: plan_volume(request, placeable, usage, self._limits),
            durability=request.durability,
        )
        metrics.STEP_SECONDS.labels("allocate").observe(time.monotonic() - started)
        volume = Volume(
            id=volume_id,
            name=name,
            cluster=cluster.id,
            size=data.size,
            durability=data.durability.to_domain(),
            bricks=plan.bricks,
            status=VolumeStatus.CREATING,
            gid=data.gid,
            options=tuple(sorted(data.options.items())),
            request=RequestId(event.id),
            labels=tuple(sorted(data.labels.items())),
            snapshot_factor=data.snapshot_factor,
        )
        await intent.record([StateChange.put_volume(volume)])
        return volume

    def _placed(self, cluster: Cluster, place: Callable[[Cluster], T], *, durability: Durability) -> T:
        """``place`` on the nodes that are up. When that fails while nodes are down, and would not
        with them, the failure is NodeDown naming them; otherwise it is the failure of the whole cluster."""
        placeable, down = self._placeable(cluster)
        try:
            return place(placeable)
        except NoCapacity as failure:
            if not down:
                raise
            place(self._observed.limit(cluster))  # raises when the down nodes are not what is missing
            raise _node_down(failure, down, placeable, durability) from failure

    def _placeable(self, cluster: Cluster) -> tuple[Cluster, Mapping[str, str]]:
        """The cluster as placement may use it now: nodes that are down count as disabled
        (the same object while the same nodes stay down, so the allocator keeps its index), and each
        device offers no more than its node reported room for at the last reconcile pass."""
        cluster = self._observed.limit(cluster)
        reported = self._health.down(cluster.id)
        down = {n.manage: reported[n.manage] for n in cluster.nodes if n.enabled and n.manage in reported}
        if not down:
            return cluster, {}
        hosts = frozenset(down)
        cached = self._placeable_cache.get(cluster.id)
        if cached is not None and cached[0] is cluster and cached[1] == hosts:
            return cached[2], down
        nodes = tuple(dataclasses.replace(n, enabled=False) if n.manage in hosts else n for n in cluster.nodes)
        placeable = dataclasses.replace(cluster, nodes=nodes)
        self._placeable_cache[cluster.id] = (cluster, hosts, placeable)
        return placeable, down

    def _provisioned(self, event: Event, volume: Volume, *, persistent_volume: str | None = None) -> Outcome:
        cluster = self._cluster(volume.cluster)
        mount, backups = mount_source(cluster, volume)
        bricks = []
        for brick in volume.bricks:
            node, _ = cluster.device(brick.device)
            bricks.append(
                models.BrickOut(
                    id=brick.id,
                    node=brick.node,
                    host=node.storage,
                    path=f"{brick_mount_point(cluster.brick_root, brick.device, brick.id)}/brick",
                    device=brick.device,
                    size=brick.size,
                    arbiter=brick.arbiter,
                )
            )
        data = models.VolumeProvisioned(
            request_id=event.id,
            volume=models.VolumeOut(
                cluster=volume.cluster,
                volume_id=volume.id,
                name=volume.name,
                size=volume.size,
                durability=models.durability_spec(volume.durability),
                bricks=bricks,
                mount=mount,
                backup_servers=backups,
                gid=volume.gid,
            ),
            persistent_volume=persistent_volume,
        )
        return self._result(event, data, key=volume.id, subject=volume.id)

    # --- delete ---------------------------------------------------------------------------------

    async def _delete(self, event: Event, data: models.DeleteVolume) -> Outcome:
        cluster = self._cluster(data.cluster)
        volume = self._selected(cluster.id, data)
        objects = data.kubernetes
        if objects is not None:
            self._kubernetes()  # refuse before the storage goes, not after
        if volume is None:
            if objects is not None:
                await self._withdraw(objects)
            gone = models.VolumeDeleted(
                request_id=event.id,
                cluster=cluster.id,
                volume_id=data.volume_id,
                name=data.name,
                existed=False,
                persistent_volume=objects.persistent_volume if objects else None,
            )
            return self._result(event, gone, key=data.volume_id or cluster.id, subject=data.volume_id)

        async def remove() -> None:
            with metrics.step("gluster_delete"):
                await self._ops.remove(cluster, volume)

        await self._retrying(remove, what=f"delete {volume.name}")
        if objects is not None:
            await self._withdraw(objects)  # after the storage, so a PV never outlives its claim's data unseen
        deleted = models.VolumeDeleted(
            request_id=event.id,
            cluster=cluster.id,
            volume_id=volume.id,
            name=volume.name,
            existed=True,
            persistent_volume=objects.persistent_volume if objects else None,
        )
        outcome = self._result(event, deleted, key=volume.id, subject=volume.id)
        return dataclasses.replace(outcome, changes=[StateChange.delete_volume(volume.id)])

    # --- expand ---------------------------------------------------------------------------------

    async def _expand(self, event: Event, data: models.ExpandVolume, intent: IntentWriter) -> Outcome:
        cluster = self._cluster(data.cluster)
        if data.kubernetes is not None:
            self._kubernetes()  # refuse before bricks are added, not after
        volume = self._selected(cluster.id, data)
        if volume is None:
            raise VolumeNotFound(f"no volume {data.name or data.volume_id} in cluster {cluster.id}")
        if volume.status is VolumeStatus.EXPANDING:
            added = volume.bricks  # resume after a crash: re-check every brick, add what gluster lacks
        elif volume.status is VolumeStatus.ONLINE:
            async with self._placement_locks.setdefault(cluster.id, asyncio.Lock()):
                with metrics.step("allocate"):
                    usage, growing = self._state.usage(cluster.id), volume
                    added = self._placed(
                        cluster,
                        lambda placeable: plan_expansion(
                            growing, data.size, placeable, usage, self._limits, zones=ZoneChecking.NONE
                        ),
                        durability=volume.durability,
                    )
                if not added:  # the bricks already hold the new size (e.g. minimum-size bricks)
                    grown = dataclasses.replace(volume, size=max(volume.size, data.size))
                    await self._resized(data, grown)
                    outcome = self._expanded(event, grown, 0, data)
                    changes = [StateChange.put_volume(grown)] if grown.size != volume.size else []
                    return dataclasses.replace(outcome, changes=changes)
                volume = dataclasses.replace(
                    volume,
                    bricks=volume.bricks + added,
                    size=max(volume.size, data.size),
                    status=VolumeStatus.EXPANDING,
                )
                await intent.record([StateChange.put_volume(volume)])
        else:
            raise VolumeConflict(f"volume {volume.name} is {volume.status.value}; expand it once it is online")

        async def grow() -> int:
            with metrics.step("gluster_expand"):
                return await self._ops.expand_volume(cluster, volume, added)

        joined = await self._retrying(grow, what=f"expand {volume.name}")
        online = dataclasses.replace(volume, status=VolumeStatus.ONLINE)
        await self._resized(data, online)
        outcome = self._expanded(event, online, joined, data)
        return dataclasses.replace(outcome, changes=[StateChange.put_volume(online)])

    async def _progress(self, event: Event, intent: IntentWriter, volume: Volume, step: str, message: str) -> None:
        data = models.Progress(
            request_id=event.id, cluster=volume.cluster, volume_id=volume.id, step=step, message=message
        )
        update = new_event(models.progressed_type(event.type), data, source=self._settings.source, subject=volume.id)
        await intent.progress(update, volume.id)

    async def _resized(self, data: models.ExpandVolume, volume: Volume) -> None:
        """The claim's PV and status follow the volume's size (also on a repeated request: idempotent)."""
        resize = data.kubernetes
        if resize is None:
            return
        claims = self._kubernetes()
        with metrics.step("kubernetes"):
            await self._retrying(lambda: claims.resized(resize, volume.size), what=f"resize {resize.persistent_volume}")

    def _expanded(self, event: Event, volume: Volume, added: int, request: models.ExpandVolume) -> Outcome:
        provisioned = self._provisioned(event, volume)
        assert isinstance(provisioned.result.data, models.VolumeProvisioned)
        data = models.VolumeExpanded(
            request_id=event.id,
            volume=provisioned.result.data.volume,
            added_bricks=added,
            persistent_volume=request.kubernetes.persistent_volume if request.kubernetes else None,
        )
        return self._result(event, data, key=volume.id, subject=volume.id)

    # --- topology -------------------------------------------------------------------------------

    def _load_topology(self, event: Event, data: models.LoadTopology) -> Outcome:
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

    async def _change_topology(
        self,
        event: Event,
        data: models.AddNode | models.NodeRef | models.AddDevice | models.DeviceRef,
        intent: IntentWriter,
    ) -> Outcome:
        """Add, remove, enable or disable a node or device. Removal is refused while bricks remain,
        unless the request asks to evacuate: then every brick moves off first (``_evacuate``)."""
        cluster = self._cluster(data.cluster)
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
            placeable, _ = self._placeable(cluster)  # no new brick on a node that is down
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
            await self._progress(event, intent, planned, "brick_moved", moved)

    async def _move(self, cluster: Cluster, move: evacuation.Move, gone: frozenset[str], intent: IntentWriter) -> None:
        """One recorded move: build the new brick, swap it in (``replace-brick … commit force``),
        destroy the old one, record the volume with the new brick in the old one's place.

        The old brick of a node that is leaving and unreachable (a dead node) is left where it is:
        the node leaves the pool, and a dead node must not block its own removal."""
        volume = self._state.volumes[move.volume]  # lists both bricks
        old_host = cluster.node(move.old.node).manage
        try:
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
        outcome = self._result(event, now, key=cluster.id, subject=cluster.id)
        return dataclasses.replace(outcome, changes=[StateChange.put_cluster(cluster)])

    # --- helpers ---------------------------------------------------------------------------------

    def _kubernetes(self) -> ClaimPublisher:
        if self._claims is None:
            raise PermanentError(
                "the request names a Kubernetes claim, but this daemon has no Kubernetes access "
                "(set PROVISIONER_KUBERNETES__ENABLED=true and, outside a pod, PROVISIONER_KUBERNETES__KUBECONFIG)",
                reason="KubernetesDisabled",
            )
        return self._claims

    async def _withdraw(self, objects: models.ClaimObjects) -> None:
        claims = self._kubernetes()
        with metrics.step("kubernetes"):
            await self._retrying(lambda: claims.withdraw(objects), what=f"remove {objects.persistent_volume}")

    def _selected(self, cluster: ClusterId, data: models.DeleteVolume | models.ExpandVolume) -> Volume | None:
        """The volume a request names by id or by name, if this cluster has it."""
        if data.volume_id:
            volume = self._state.volumes.get(VolumeId(data.volume_id))
        else:
            volume = self._state.volume_named(cluster, data.name or "")
        return volume if volume is not None and volume.cluster == cluster else None

    def _cluster(self, cluster_id: str) -> Cluster:
        cluster = self._state.clusters.get(ClusterId(cluster_id))
        if cluster is None:
            raise UnknownCluster(f"cluster {cluster_id} has no topology; load one with `provisioner topology load`")
        return cluster

    async def _retrying(self, attempt: Callable[[], Awaitable[T]], *, what: str) -> T:
        worker = self._settings.worker
        delay = worker.retry_backoff
        for number in range(1, worker.max_attempts + 1):
            try:
                return await attempt()
            except TemporaryError as e:
                if number == worker.max_attempts:
                    raise
                wait = max(delay, e.delay) if e.delay else delay
                wait = min(wait, worker.retry_backoff_max)
                log.warning("%s: attempt %d failed (%s); retrying in %.1fs", what, number, e, wait)
                metrics.RETRIES.labels(e.reason).inc()
                await self._sleep(wait)
                delay = min(delay * 2, worker.retry_backoff_max)
            except ProvisionerError:
                raise
            except Exception as e:
                # Unknown failures are temporary with bounded retries, then permanent.
                if number == worker.max_attempts:
                    raise PermanentError(f"{what}: {type(e).__name__}: {e}", reason="Internal") from e
                log.exception("%s: unexpected error on attempt %d", what, number)
                metrics.RETRIES.labels("Internal").inc()
                await self._sleep(min(delay, worker.retry_backoff_max))
                delay = min(delay * 2, worker.retry_backoff_max)
        raise AssertionError("unreachable")

    def _result(self, event: Event, data: models.Model, *, key: str, subject: str | None) -> Outcome:
        result = new_event(models.succeeded_type(event.type), data, source=self._settings.source, subject=subject)
        return Outcome(result=result, key=key, changes=[])

    def _failed(
        self, event: Event, error: ProvisionerError, *, cluster: str | None, volume: str | None = None
    ) -> Outcome:
        data = models.RequestFailed(
            request_id=event.id,
            cluster=cluster,
            volume_id=volume,
            reason=error.reason,
            message=str(error) + self._down_note(cluster, error),
            retriable=isinstance(error, TemporaryError),
        )
        result = new_event(models.failed_type(event.type), data, source=self._settings.source, subject=volume)
        return Outcome(result=result, key=volume or cluster or "", changes=[])

    def _down_note(self, cluster: str | None, error: ProvisionerError) -> str:
        """For a temporary failure in a cluster with nodes down: which ones and why (the likely cause,
        which gluster's own message, e.g. "Some of the peers are down", does not name)."""
        if cluster is None or not isinstance(error, TemporaryError) or error.reason == "NodeDown":
            return ""
        down = self._health.down(cluster)
        return f"; nodes down: {_listed(down)}" if down else ""


def _node_down(
    failure: NoCapacity, down: Mapping[str, str], placeable: Cluster, durability: Durability
) -> TemporaryError:
    """The failure of a placement that only the down nodes could have satisfied."""
    usable = [n for n in placeable.nodes if n.enabled and any(d.enabled for d in n.devices)]
    need = durability.set_size
    match failure.reason:
        case "NotEnoughNodes":
            up = len(usable)
            what = f"{_kind(durability)} needs {need} nodes, {up} {'is' if up == 1 else 'are'} up"
        case "NotEnoughZones":
            zones = len({n.zone for n in usable})
            what = f"{_kind(durability)} with strict zone checking needs {need} zones, {zones} have a node up"
        case _:
            what = f"{failure} (on the nodes that are up)"
    return TemporaryError(f"{what}; down: {_listed(down)}", reason="NodeDown")


def _kind(durability: Durability) -> str:
    match durability:
        case Replicate(replica=replica, arbiter=arbiter):
            return f"replica {replica}{' arbiter 1' if arbiter else ''}"
        case Disperse(data=data, redundancy=redundancy):
            return f"disperse {data}+{redundancy}"
    return "distribute"


def _listed(down: Mapping[str, str]) -> str:
    return ", ".join(f"{host} ({why})" for host, why in sorted(down.items()))


def _objects_of(spec: models.ClaimVolume) -> models.ClaimObjects:
    """The objects ``publish`` makes for a claim, by their deterministic names."""
    uid = spec.claim.uid
    return models.ClaimObjects(
        persistent_volume=names.pv_name(uid), namespace=spec.claim.namespace, service=names.service_name(uid)
    )
