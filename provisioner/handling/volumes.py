"""Volume requests: provision, expand and delete, each an operation (``handling.operation``).

* Provision: place the bricks (under the cluster's placement lock: each plan sees the space the
  previous one took), record the volume as ``creating``, build the bricks in parallel across nodes,
  create, tag and start the gluster volume, publish the claim's objects; a failure destroys what
  was built. A redelivered request resumes the recorded bricks; a repeated one gets the same answer.
* Expand: add whole brick sets of the volume's brick size, recorded as ``expanding`` first; a
  failure before gluster took any of them destroys them and restores the record.
* Delete: record ``deleting``, stop and delete the gluster volume (only if it is ours), destroy
  the bricks, then the claim's objects; the tombstone commits with the answer.

Every request names a volume by id or by name; the lane orders requests that share either
(``handling.dispatch.keys_of``), so these handlers never race on one volume.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass

from provisioner import metrics
from provisioner.delivery.outcome import IntentWriter, Outcome
from provisioner.domain import (
    Brick,
    Cluster,
    ClusterId,
    RequestId,
    Volume,
    VolumeId,
    VolumeStatus,
    derive_id,
    volume_name_for,
)
from provisioner.errors import PersistentVolumeTaken, ProvisionerError, VolumeConflict, VolumeNameTaken, VolumeNotFound
from provisioner.events import models
from provisioner.events.envelope import Event
from provisioner.handling.kubernetes import ClaimSteps, KubernetesObjects, objects_of
from provisioner.handling.operation import OperationFailed, run
from provisioner.handling.results import progress, succeeded, volume_out
from provisioner.handling.retry import Retrying
from provisioner.planning.allocator import Limits, PlacementRequest, ZoneChecking, plan_volume
from provisioner.planning.expansion import plan_expansion
from provisioner.planning.placement import Placement
from provisioner.state import DesiredState, StateChange
from provisioner.storage.operations import VolumeOperations


@dataclass(frozen=True, slots=True)
class Request:
    """What every step of one request shares."""

    event: Event
    intent: IntentWriter
    retrying: Retrying  # bound to the request's deadline
    rollback: Retrying  # a budget of its own: undoing must not be cut short by the deadline that failed us
    source: str


class VolumeRequests:
    def __init__(
        self,
        state: DesiredState,
        operations: VolumeOperations,
        placement: Placement,
        *,
        locks: dict[ClusterId, asyncio.Lock],
        limits: Limits,
        objects: KubernetesObjects | None,
    ) -> None:
        self.state = state
        self.ops = operations
        self.placement = placement
        self.locks = locks
        self.limits = limits
        self.objects = objects

    def lock(self, cluster: ClusterId) -> asyncio.Lock:
        """The cluster's placement lock, shared with topology changes and evacuation."""
        return self.locks.setdefault(cluster, asyncio.Lock())

    # --- provision ------------------------------------------------------------------------------

    async def provision(self, request: Request, data: models.ProvisionVolume) -> Outcome:
        claims = ClaimSteps(self.objects, request.retrying)
        if data.kubernetes is not None:
            claims.require()  # refuse before anything is placed
        try:
            return await self._provision(request, data, claims)
        except OperationFailed as e:
            if data.kubernetes is not None:
                await claims.failed(data.kubernetes.claim, e.cause)
            raise
        except ProvisionerError as e:
            if data.kubernetes is not None:
                await claims.failed(data.kubernetes.claim, e)
            raise

    async def _provision(self, request: Request, data: models.ProvisionVolume, claims: ClaimSteps) -> Outcome:
        cluster = self.state.require_cluster(data.cluster)
        volume_id = VolumeId(data.volume_id or derive_id("volume", request.event.id))
        name = data.name or volume_name_for(volume_id)
        existing = self.state.volumes.get(volume_id)
        if existing is not None and existing.name != name:
            raise VolumeConflict(f"volume {volume_id} exists with the name {existing.name}, not {name}")
        if existing is not None and existing.status is VolumeStatus.ONLINE:
            # the same request again, or another one for the same volume: the same answer
            pv = await claims.publish(data.kubernetes, volume_out(cluster, existing)) if data.kubernetes else None
            return _provisioned(request, cluster, existing, pv)
        if existing is not None and existing.status is not VolumeStatus.CREATING:
            raise VolumeConflict(f"volume {volume_id} is {existing.status.value}")
        holder = self.state.volume_named(cluster.id, name)
        if holder is not None and holder.id != volume_id:
            raise VolumeNameTaken(f"volume name {name} is taken by volume {holder.id}")
        return await run(Provision(self, request, data, cluster, volume_id, name, existing, claims))

    # --- expand ---------------------------------------------------------------------------------

    async def expand(self, request: Request, data: models.ExpandVolume) -> Outcome:
        cluster = self.state.require_cluster(data.cluster)
        claims = ClaimSteps(self.objects, request.retrying)
        if data.kubernetes is not None:
            claims.require()  # refuse before bricks are added, not after
        volume = self.selected(cluster.id, data)
        if volume is None:
            raise VolumeNotFound(f"no volume {data.name or data.volume_id} in cluster {cluster.id}")
        if volume.status not in (VolumeStatus.ONLINE, VolumeStatus.EXPANDING):
            raise VolumeConflict(f"volume {volume.name} is {volume.status.value}; expand it once it is online")
        return await run(Expand(self, request, data, cluster, volume, claims))

    # --- delete ---------------------------------------------------------------------------------

    async def delete(self, request: Request, data: models.DeleteVolume) -> Outcome:
        cluster = self.state.require_cluster(data.cluster)
        claims = ClaimSteps(self.objects, request.retrying)
        if data.kubernetes is not None:
            claims.require()  # refuse before the storage goes, not after
        volume = self.selected(cluster.id, data)
        if volume is None:
            if data.kubernetes is not None:
                await claims.withdraw(data.kubernetes)
            gone = models.VolumeDeleted(
                request_id=request.event.id,
                cluster=cluster.id,
                volume_id=data.volume_id,
                name=data.name,
                existed=False,
                persistent_volume=data.kubernetes.persistent_volume if data.kubernetes else None,
            )
            key = data.volume_id or cluster.id
            return succeeded(request.event, gone, key=key, subject=data.volume_id, source=request.source)
        if volume.status is VolumeStatus.EXPANDING or volume.replacing:
            raise VolumeConflict(f"volume {volume.name} is being changed; delete it once that request has finished")
        return await run(Delete(self, request, data, cluster, volume, claims))

    def selected(self, cluster: ClusterId, data: models.DeleteVolume | models.ExpandVolume) -> Volume | None:
        """The volume a request names by id or by name, if this cluster has it."""
        if data.volume_id:
            volume = self.state.volumes.get(VolumeId(data.volume_id))
        else:
            volume = self.state.volume_named(cluster, data.name or "")
        return volume if volume is not None and volume.cluster == cluster else None

    # --- shared by the operations ---------------------------------------------------------------

    async def record(self, request: Request, volume: Volume) -> None:
        """Durably record ``volume`` before any node work on it."""
        await request.retrying(
            lambda: request.intent.record([StateChange.put_volume(volume)]), what=f"record {volume.name}"
        )

    async def remove(self, retrying: Retrying, cluster: Cluster, volume: Volume) -> bool:
        async def remove() -> bool:
            with metrics.step("gluster_delete"):
                return await self.ops.remove(cluster, volume)

        return await retrying(remove, what=f"remove {volume.name}")


def _provisioned(
    request: Request, cluster: Cluster, volume: Volume, pv: str | None, *, changes: tuple[StateChange, ...] = ()
) -> Outcome:
    data = models.VolumeProvisioned(
        request_id=request.event.id, volume=volume_out(cluster, volume), persistent_volume=pv
    )
    return succeeded(request.event, data, key=volume.id, subject=volume.id, source=request.source, changes=changes)


class Provision:
    def __init__(
        self,
        volumes: VolumeRequests,
        request: Request,
        data: models.ProvisionVolume,
        cluster: Cluster,
        volume_id: VolumeId,
        name: str,
        existing: Volume | None,
        claims: ClaimSteps,
    ) -> None:
        self._volumes = volumes
        self._request = request
        self._data = data
        self._cluster = cluster
        self._name = name
        self._claims = claims
        self.volume_id: str | None = volume_id
        self._volume = existing  # a 'creating' record: resume its exact bricks
        self._published = False

    async def record(self) -> None:
        if self._volume is not None:
            return
        data, cluster = self._data, self._cluster
        if data.kubernetes is not None:
            await self._claims.still_wanted(data.kubernetes)
        volumes = self._volumes
        async with volumes.lock(cluster.id):
            started = time.monotonic()
            placement = PlacementRequest(
                volume=VolumeId(self.volume_id or ""),
                size=data.size,
                durability=data.durability.to_domain(),
                zone_checking=ZoneChecking(data.zone_checking),
            )
            usage = volumes.state.usage(cluster.id)
            plan = volumes.placement.placed(
                cluster,
                lambda placeable: plan_volume(placement, placeable, usage, volumes.limits),
                durability=placement.durability,
            )
            metrics.STEP_SECONDS.labels("allocate").observe(time.monotonic() - started)
            self._volume = Volume(
                id=VolumeId(self.volume_id or ""),
                name=self._name,
                cluster=cluster.id,
                size=data.size,
                durability=placement.durability,
                bricks=plan.bricks,
                status=VolumeStatus.CREATING,
                gid=data.gid,
                options=tuple(sorted(data.options.items())),
                request=RequestId(self._request.event.id),
                labels=tuple(sorted(data.labels.items())),
                snapshot_factor=data.snapshot_factor,
            )
            await volumes.record(self._request, self._volume)

    @property
    def _made(self) -> Volume:
        assert self._volume is not None, "record() first"
        return self._volume

    async def execute(self) -> str | None:
        volume, cluster, request = self._made, self._cluster, self._request
        ops = self._volumes.ops

        async def bricks() -> None:
            with metrics.step("brick_create"):
                await ops.create_bricks(cluster, volume)

        async def gluster() -> None:
            with metrics.step("gluster_create"):
                await ops.create_volume(cluster, volume)

        await request.retrying(bricks, what=f"create the bricks of {volume.name}")
        ready = progress(
            request.event, volume, "bricks_ready", f"{len(volume.bricks)} bricks ready", source=request.source
        )
        await request.retrying(lambda: request.intent.progress(ready, volume.id), what="progress")
        await request.retrying(gluster, what=f"create the gluster volume {volume.name}")
        if self._data.kubernetes is None:
            return None
        self._published = True
        return await self._claims.publish(self._data.kubernetes, volume_out(cluster, volume))

    async def roll_back(self, failure: ProvisionerError) -> tuple[StateChange, ...]:
        volume = self._made
        spec = self._data.kubernetes
        if spec is not None and self._published and not isinstance(failure, PersistentVolumeTaken):
            await ClaimSteps(self._volumes.objects, self._request.rollback).withdraw(objects_of(spec))
        with metrics.step("rollback"):
            await self._volumes.remove(self._request.rollback, self._cluster, volume)
        return (StateChange.delete_volume(volume.id),)

    async def finish(self, pv: str | None) -> Outcome:
        online = dataclasses.replace(self._made, status=VolumeStatus.ONLINE)
        return _provisioned(self._request, self._cluster, online, pv, changes=(StateChange.put_volume(online),))


class Expand:
    def __init__(
        self,
        volumes: VolumeRequests,
        request: Request,
        data: models.ExpandVolume,
        cluster: Cluster,
        volume: Volume,
        claims: ClaimSteps,
    ) -> None:
        self._volumes = volumes
        self._request = request
        self._data = data
        self._cluster = cluster
        self._claims = claims
        self.volume_id: str | None = volume.id
        self._before = volume
        self._volume = volume
        self._added: tuple[Brick, ...] = ()

    async def record(self) -> None:
        volume, cluster, volumes = self._before, self._cluster, self._volumes
        if volume.status is VolumeStatus.EXPANDING:
            # resume after a crash: re-check every brick, add what gluster lacks
            self._added = volume.bricks
            return
        async with volumes.lock(cluster.id):
            with metrics.step("allocate"):
                usage = volumes.state.usage(cluster.id)
                self._added = volumes.placement.placed(
                    cluster,
                    lambda placeable: plan_expansion(
                        volume, self._data.size, placeable, usage, volumes.limits, zones=ZoneChecking.NONE
                    ),
                    durability=volume.durability,
                )
            if not self._added:  # the bricks already hold the new size (e.g. minimum-size bricks)
                return
            self._volume = dataclasses.replace(
                volume,
                bricks=volume.bricks + self._added,
                size=max(volume.size, self._data.size),
                status=VolumeStatus.EXPANDING,
            )
            await volumes.record(self._request, self._volume)

    async def execute(self) -> int:
        if not self._added:
            return 0
        volume, cluster, request = self._volume, self._cluster, self._request
        ops = self._volumes.ops

        async def bricks() -> None:
            with metrics.step("brick_create"):
                await ops.create_bricks(cluster, volume, self._added)

        async def grow() -> int:
            with metrics.step("gluster_expand"):
                return await ops.add_bricks(cluster, volume, self._added)

        await request.retrying(bricks, what=f"create the new bricks of {volume.name}")
        return await request.retrying(grow, what=f"add bricks to {volume.name}")

    async def roll_back(self, failure: ProvisionerError) -> tuple[StateChange, ...]:
        """Destroy the new bricks and restore the record, unless gluster took some of them: then the
        record stays ``expanding`` and a repeated request (or reconcile) finishes the expansion."""
        if not self._added or self._before.status is VolumeStatus.EXPANDING:
            return ()
        ops, cluster, volume, rollback = self._volumes.ops, self._cluster, self._volume, self._request.rollback
        listed = await rollback(lambda: ops.listed_bricks(cluster, volume, self._added), what=f"check {volume.name}")
        if listed:
            return ()
        with metrics.step("rollback"):
            await rollback(
                lambda: ops.destroy_bricks(cluster, volume, self._added), what=f"remove new bricks of {volume.name}"
            )
        return (StateChange.put_volume(self._before),)

    async def finish(self, joined: int) -> Outcome:
        grown = dataclasses.replace(
            self._volume, size=max(self._volume.size, self._data.size), status=VolumeStatus.ONLINE
        )
        resize = self._data.kubernetes
        if resize is not None:
            await self._claims.resized(resize, grown.size)
        data = models.VolumeExpanded(
            request_id=self._request.event.id,
            volume=volume_out(self._cluster, grown),
            added_bricks=joined,
            persistent_volume=resize.persistent_volume if resize else None,
        )
        changes = (StateChange.put_volume(grown),) if grown != self._before else ()
        return succeeded(
            self._request.event, data, key=grown.id, subject=grown.id, source=self._request.source, changes=changes
        )


class Delete:
    def __init__(
        self,
        volumes: VolumeRequests,
        request: Request,
        data: models.DeleteVolume,
        cluster: Cluster,
        volume: Volume,
        claims: ClaimSteps,
    ) -> None:
        self._volumes = volumes
        self._request = request
        self._data = data
        self._cluster = cluster
        self._claims = claims
        self.volume_id: str | None = volume.id
        self._volume = dataclasses.replace(volume, status=VolumeStatus.DELETING)

    async def record(self) -> None:
        await self._volumes.record(self._request, self._volume)

    async def execute(self) -> bool:
        return await self._volumes.remove(self._request.retrying, self._cluster, self._volume)

    async def roll_back(self, failure: ProvisionerError) -> tuple[StateChange, ...]:
        return ()  # half deleted cannot go back: the 'deleting' record stays for a repeated delete

    async def finish(self, existed: bool) -> Outcome:
        volume, objects = self._volume, self._data.kubernetes
        if objects is not None:
            await self._claims.withdraw(objects)  # after the storage, so a PV never outlives its data unseen
        deleted = models.VolumeDeleted(
            request_id=self._request.event.id,
            cluster=volume.cluster,
            volume_id=volume.id,
            name=volume.name,
            existed=True,
            persistent_volume=objects.persistent_volume if objects else None,
        )
        return succeeded(
            self._request.event,
            deleted,
            key=volume.id,
            subject=volume.id,
            source=self._request.source,
            changes=(StateChange.delete_volume(volume.id),),
        )
