"""Turns one validated request into node work and an outcome: a result event plus state changes.

The worker knows nothing about Kafka. The caller publishes the outcome, the state changes and the
input offset in one transaction. Before any node work on a new volume, the worker records the
volume as ``creating`` through ``IntentWriter``, so a crash at any later instant leaves state that
names every brick it may have made: a redelivered request resumes those exact bricks, and nothing
on a node is ever unowned.

Temporary failures are retried with exponential backoff up to ``worker.max_attempts``
(``provisioner.retry``); then, or on a permanent failure, a half-made volume is rolled back and the
request is answered as failed. Placement goes through ``provisioner.placement`` (nodes that are
down and observed room), topology requests through ``provisioner.topology_changes``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from provisioner import metrics
from provisioner.delivery.outcome import IntentWriter, Outcome, progress, succeeded
from provisioner.domain import (
    Cluster,
    ClusterId,
    RequestId,
    Volume,
    VolumeId,
    VolumeStatus,
    brick_mount_point,
    derive_id,
    volume_name_for,
)
from provisioner.errors import (
    PermanentError,
    ProvisionerError,
    TemporaryError,
    VolumeConflict,
    VolumeNotFound,
)
from provisioner.events import models
from provisioner.events.envelope import Event, new_event
from provisioner.handling.retry import Retrying
from provisioner.handling.topology import TopologyChanges
from provisioner.kube import names
from provisioner.planning.allocator import Limits, PlacementRequest, ZoneChecking, plan_volume
from provisioner.planning.expansion import plan_expansion
from provisioner.planning.placement import NodeHealthView, ObservedSpace, Placement
from provisioner.settings import Settings
from provisioner.state import DesiredState, StateChange
from provisioner.storage.operations import VolumeOperations, mount_source

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
        self._claims = claims
        self._ops = operations
        self._settings = settings
        self._retrying = Retrying(settings.worker, sleep=sleep)
        self._placement = Placement(health, observed)
        storage = settings.storage
        self._placement_locks: dict[ClusterId, asyncio.Lock] = {}
        self._limits = Limits(
            min_brick=storage.min_brick_size,
            max_brick=storage.max_brick_size,
            max_bricks=storage.max_bricks_per_volume,
        )
        self._topology = TopologyChanges(
            state,
            operations,
            retrying=self._retrying,
            placement=self._placement,
            placement_locks=self._placement_locks,
            limits=self._limits,
            source=settings.source,
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
                    outcome = self._topology.load(event, data)
                case models.AddNode() | models.NodeRef() | models.AddDevice() | models.DeviceRef() as data:
                    outcome = await self._topology.change(event, data, intent)
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
        cluster = self._state.require_cluster(data.cluster)
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
            await progress(
                event,
                intent,
                volume,
                "bricks_ready",
                f"{len(volume.bricks)} bricks ready",
                source=self._settings.source,
            )
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
        cluster = self._state.require_cluster(volume.cluster)
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
        plan = self._placement.placed(
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

    def _provisioned(self, event: Event, volume: Volume, *, persistent_volume: str | None = None) -> Outcome:
        cluster = self._state.require_cluster(volume.cluster)
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
        return succeeded(event, data, source=self._settings.source, key=volume.id, subject=volume.id)

    # --- delete ---------------------------------------------------------------------------------

    async def _delete(self, event: Event, data: models.DeleteVolume) -> Outcome:
        cluster = self._state.require_cluster(data.cluster)
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
            return succeeded(
                event, gone, source=self._settings.source, key=data.volume_id or cluster.id, subject=data.volume_id
            )

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
        outcome = succeeded(event, deleted, source=self._settings.source, key=volume.id, subject=volume.id)
        return dataclasses.replace(outcome, changes=[StateChange.delete_volume(volume.id)])

    # --- expand ---------------------------------------------------------------------------------

    async def _expand(self, event: Event, data: models.ExpandVolume, intent: IntentWriter) -> Outcome:
        cluster = self._state.require_cluster(data.cluster)
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
                    added = self._placement.placed(
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
        return succeeded(event, data, source=self._settings.source, key=volume.id, subject=volume.id)

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

    def _failed(
        self, event: Event, error: ProvisionerError, *, cluster: str | None, volume: str | None = None
    ) -> Outcome:
        data = models.RequestFailed(
            request_id=event.id,
            cluster=cluster,
            volume_id=volume,
            reason=error.reason,
            message=str(error) + self._placement.down_note(cluster, error),
            retriable=isinstance(error, TemporaryError),
        )
        result = new_event(models.failed_type(event.type), data, source=self._settings.source, subject=volume)
        return Outcome(result=result, key=volume or cluster or "", changes=[])


def _objects_of(spec: models.ClaimVolume) -> models.ClaimObjects:
    """The objects ``publish`` makes for a claim, by their deterministic names."""
    uid = spec.claim.uid
    return models.ClaimObjects(
        persistent_volume=names.pv_name(uid), namespace=spec.claim.namespace, service=names.service_name(uid)
    )
