"""The operations of volume requests (``handling.operation``): provision, expand and delete.

* Provision: place the bricks under the cluster's placement lock, record the volume as
  ``creating``, build the bricks in parallel across nodes, create, tag and start the gluster
  volume, publish the claim's objects; rollback destroys what was built (and the claim's objects).
  A redelivered request resumes the recorded bricks.
* Expand: add whole brick sets of the volume's brick size, recorded as ``expanding`` first;
  rollback, when gluster took none of them, destroys them and restores the record.
* Delete: record ``deleting``, stop and delete the gluster volume (only if it is ours), destroy
  the bricks, then the claim's objects; the tombstone commits with the answer.
"""

from __future__ import annotations

import dataclasses
import time

from provisioner import metrics
from provisioner.delivery.outcome import Outcome
from provisioner.domain import Brick, Cluster, RequestId, Volume, VolumeId, VolumeStatus
from provisioner.errors import PersistentVolumeTaken, ProvisionerError
from provisioner.events import models, results
from provisioner.handling.kubernetes import ClaimSteps, objects_of
from provisioner.handling.request import Request, Storage
from provisioner.handling.results import progress, succeeded, volume_out
from provisioner.planning.allocator import PlacementRequest, ZoneChecking, plan_volume
from provisioner.planning.expansion import plan_expansion
from provisioner.planning.tags import TagMatch
from provisioner.state import StateChange


def provisioned(
    request: Request, cluster: Cluster, volume: Volume, pv: str | None, *, changes: tuple[StateChange, ...] = ()
) -> Outcome:
    data = results.VolumeProvisioned(
        request_id=request.event.id, volume=volume_out(cluster, volume), persistent_volume=pv
    )
    return succeeded(request.event, data, key=volume.id, subject=volume.id, source=request.source, changes=changes)


class Provision:
    def __init__(
        self,
        storage: Storage,
        request: Request,
        data: models.ProvisionVolume,
        cluster: Cluster,
        volume_id: VolumeId,
        name: str,
        existing: Volume | None,
        claims: ClaimSteps,
    ) -> None:
        self._storage = storage
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
        storage = self._storage
        async with storage.lock(cluster.id):
            started = time.monotonic()
            placement = PlacementRequest(
                volume=VolumeId(self.volume_id or ""),
                size=data.size,
                durability=data.durability.to_domain(),
                zone_checking=ZoneChecking(data.zone_checking),
                tag_match=TagMatch.parse(data.device_tag_match) if data.device_tag_match else None,
            )
            usage = storage.state.usage(cluster.id)
            plan = storage.placement.placed(
                cluster,
                lambda placeable: plan_volume(placement, placeable, usage, storage.limits),
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
                device_tag_match=data.device_tag_match,
            )
            await storage.record(self._request, self._volume)

    @property
    def _made(self) -> Volume:
        assert self._volume is not None, "record() first"
        return self._volume

    async def execute(self) -> str | None:
        volume, cluster, request = self._made, self._cluster, self._request
        ops = self._storage.ops

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
            await ClaimSteps(self._storage.objects, self._request.rollback).withdraw(
                objects_of(spec), cluster=volume.cluster, volume_id=volume.id, name=volume.name
            )
        with metrics.step("rollback"):
            await self._storage.remove(self._request.rollback, self._cluster, volume)
        return (StateChange.delete_volume(volume.id),)

    async def finish(self, pv: str | None) -> Outcome:
        online = dataclasses.replace(self._made, status=VolumeStatus.ONLINE)
        return provisioned(self._request, self._cluster, online, pv, changes=(StateChange.put_volume(online),))


class Expand:
    def __init__(
        self,
        storage: Storage,
        request: Request,
        data: models.ExpandVolume,
        cluster: Cluster,
        volume: Volume,
        claims: ClaimSteps,
    ) -> None:
        self._storage = storage
        self._request = request
        self._data = data
        self._cluster = cluster
        self._claims = claims
        self.volume_id: str | None = volume.id
        self._before = volume
        self._volume = volume
        self._added: tuple[Brick, ...] = ()

    async def record(self) -> None:
        volume, cluster, storage = self._before, self._cluster, self._storage
        if volume.status is VolumeStatus.EXPANDING:
            # resume after a crash: re-check every brick, add what gluster lacks
            self._added = volume.bricks
            return
        async with storage.lock(cluster.id):
            with metrics.step("allocate"):
                usage = storage.state.usage(cluster.id)
                self._added = storage.placement.placed(
                    cluster,
                    lambda placeable: plan_expansion(
                        volume, self._data.size, placeable, usage, storage.limits, zones=ZoneChecking.NONE
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
            await storage.record(self._request, self._volume)

    async def execute(self) -> int:
        if not self._added:
            return 0
        volume, cluster, request = self._volume, self._cluster, self._request
        ops = self._storage.ops

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
        ops, cluster, volume, rollback = self._storage.ops, self._cluster, self._volume, self._request.rollback
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
        data = results.VolumeExpanded(
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
        storage: Storage,
        request: Request,
        data: models.DeleteVolume,
        cluster: Cluster,
        volume: Volume,
        claims: ClaimSteps,
    ) -> None:
        self._storage = storage
        self._request = request
        self._data = data
        self._cluster = cluster
        self._claims = claims
        self.volume_id: str | None = volume.id
        self._volume = dataclasses.replace(volume, status=VolumeStatus.DELETING)

    async def record(self) -> None:
        await self._storage.record(self._request, self._volume)

    async def execute(self) -> bool:
        return await self._storage.remove(self._request.retrying, self._cluster, self._volume)

    async def roll_back(self, failure: ProvisionerError) -> tuple[StateChange, ...]:
        return ()  # half deleted cannot go back: the 'deleting' record stays for a repeated delete

    async def finish(self, existed: bool) -> Outcome:
        volume, objects = self._volume, self._data.kubernetes
        if objects is not None:
            # after the storage, so a PV never outlives its data unseen
            await self._claims.withdraw(objects, cluster=volume.cluster, volume_id=volume.id, name=volume.name)
        deleted = results.VolumeDeleted(
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
