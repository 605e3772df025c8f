"""Volume requests: provision, expand and delete, refused here when they cannot be served, and
otherwise run as operations (``handling.volume_operations``).

A repeated provision of an online volume gets the same answer (and the claim's objects again), a
delete of a volume that is gone succeeds with ``existed: false``, and a request that would race
another on the same volume is refused with the state it found.

Every request names a volume by id or by name; the lane orders requests that share either
(``handling.dispatch.keys_of``), so these handlers never race on one volume.
"""

from __future__ import annotations

from provisioner.delivery.outcome import Outcome
from provisioner.domain import ClusterId, Volume, VolumeId, VolumeStatus, derive_id, volume_name_for
from provisioner.errors import ProvisionerError, VolumeConflict, VolumeHasSnapshots, VolumeNameTaken, VolumeNotFound
from provisioner.events import models, results
from provisioner.handling.kubernetes import ClaimSteps
from provisioner.handling.operation import OperationFailed, run
from provisioner.handling.request import Request, Storage
from provisioner.handling.results import succeeded, volume_out
from provisioner.handling.volume_operations import Delete, Expand, Provision, provisioned


class VolumeRequests:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    # --- provision ------------------------------------------------------------------------------

    async def provision(self, request: Request, data: models.ProvisionVolume) -> Outcome:
        claims = ClaimSteps(self._storage.objects, request.retrying)
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
        cluster = self._storage.state.require_cluster(data.cluster)
        volume_id = VolumeId(data.volume_id or derive_id("volume", request.event.id))
        name = data.name or volume_name_for(volume_id)
        existing = self._storage.state.volumes.get(volume_id)
        if existing is not None and existing.name != name:
            raise VolumeConflict(f"volume {volume_id} exists with the name {existing.name}, not {name}")
        if existing is not None and existing.status is VolumeStatus.ONLINE:
            # the same request again, or another one for the same volume: the same answer
            pv = await claims.publish(data.kubernetes, volume_out(cluster, existing)) if data.kubernetes else None
            return provisioned(request, cluster, existing, pv)
        if existing is not None and existing.status is not VolumeStatus.CREATING:
            raise VolumeConflict(f"volume {volume_id} is {existing.status.value}")
        holder = self._storage.state.volume_named(cluster.id, name)
        if holder is not None and holder.id != volume_id:
            raise VolumeNameTaken(f"volume name {name} is taken by volume {holder.id}")
        return await run(Provision(self._storage, request, data, cluster, volume_id, name, existing, claims))

    # --- expand ---------------------------------------------------------------------------------

    async def expand(self, request: Request, data: models.ExpandVolume) -> Outcome:
        cluster = self._storage.state.require_cluster(data.cluster)
        claims = ClaimSteps(self._storage.objects, request.retrying)
        if data.kubernetes is not None:
            claims.require()  # refuse before bricks are added, not after
        volume = self.selected(cluster.id, data)
        if volume is None:
            raise VolumeNotFound(f"no volume {data.name or data.volume_id} in cluster {cluster.id}")
        if volume.status not in (VolumeStatus.ONLINE, VolumeStatus.EXPANDING):
            raise VolumeConflict(f"volume {volume.name} is {volume.status.value}; expand it once it is online")
        return await run(Expand(self._storage, request, data, cluster, volume, claims))

    # --- delete ---------------------------------------------------------------------------------

    async def delete(self, request: Request, data: models.DeleteVolume) -> Outcome:
        cluster = self._storage.state.require_cluster(data.cluster)
        claims = ClaimSteps(self._storage.objects, request.retrying)
        if data.kubernetes is not None:
            claims.require()  # refuse before the storage goes, not after
        volume = self.selected(cluster.id, data)
        if volume is None:
            if data.kubernetes is not None:
                await claims.withdraw(data.kubernetes, cluster=cluster.id, volume_id=data.volume_id, name=data.name)
            gone = results.VolumeDeleted(
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
        snapshots = self._storage.state.snapshots_of(volume.id)
        if snapshots:
            names = ", ".join(s.name for s in snapshots[:10])
            raise VolumeHasSnapshots(
                f"volume {volume.name} has {len(snapshots)} snapshot(s) ({names}); delete them first"
            )
        return await run(Delete(self._storage, request, data, cluster, volume, claims))

    def selected(self, cluster: ClusterId, data: models.DeleteVolume | models.ExpandVolume) -> Volume | None:
        """The volume a request names by id or by name, if this cluster has it."""
        return self._storage.state.volume_by(cluster, data.volume_id, data.name)
