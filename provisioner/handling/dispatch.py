"""One request in, one outcome out: routing by request type, and the one place failures become results.

Handlers raise typed errors (``provisioner.errors``), or ``OperationFailed`` when an operation's
node steps failed and were rolled back; ``handle`` turns either into the failure result, with the
rollback's state changes, and adds which nodes are down when that is the likely cause. Only a bug
or a cancellation escapes ``handle`` (the lane parks the request as a dead letter then).

``keys_of`` tells the lane which volumes a request works on, so requests on one volume run in
offset order whether they name it by id or by name (``delivery.schedule``); topology requests
have no keys and run alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from provisioner.delivery.outcome import IntentWriter, Outcome
from provisioner.delivery.schedule import BARRIER, Keys
from provisioner.domain import ClusterId, VolumeId, derive_id, volume_name_for
from provisioner.errors import ProvisionerError, UnknownType
from provisioner.events import models
from provisioner.events.envelope import Event
from provisioner.handling.clones import clone
from provisioner.handling.kubernetes import KubernetesObjects
from provisioner.handling.operation import OperationFailed
from provisioner.handling.request import Request, Storage
from provisioner.handling.results import failed
from provisioner.handling.retry import Retrying
from provisioner.handling.snapshots import SnapshotRequests
from provisioner.handling.topology import TopologyRequests
from provisioner.handling.volumes import VolumeRequests
from provisioner.planning.allocator import Limits
from provisioner.planning.placement import NodeHealthView, ObservedSpace, Placement
from provisioner.settings import Settings
from provisioner.state import DesiredState
from provisioner.storage.operations import VolumeOperations

Sleep = Callable[[float], Awaitable[None]]


class RequestHandler:
    def __init__(
        self,
        state: DesiredState,
        operations: VolumeOperations,
        settings: Settings,
        *,
        objects: KubernetesObjects | None = None,
        health: NodeHealthView | None = None,
        observed: ObservedSpace | None = None,
        retrying: Retrying | None = None,
    ) -> None:
        self._state = state
        self._settings = settings
        self._retrying = retrying or Retrying(settings.worker)
        self._placement = Placement(health, observed)
        sizes = settings.storage
        limits = Limits(
            min_brick=sizes.min_brick_size, max_brick=sizes.max_brick_size, max_bricks=sizes.max_bricks_per_volume
        )
        storage = Storage(state, operations, self._placement, limits, objects)
        self._storage = storage
        self.volumes = VolumeRequests(storage)
        self.topology = TopologyRequests(storage)
        self.snapshots = SnapshotRequests(storage)

    def keys_of(self, event: Event) -> Keys | None:
        """The volumes ``event`` works on: its id and its name, as far as they can be known now."""
        match event.data:
            case models.ProvisionVolume() as data:
                volume_id = VolumeId(data.volume_id or derive_id("volume", event.id))
                return frozenset({_id_key(volume_id), _name_key(data.cluster, data.name or volume_name_for(volume_id))})
            case models.DeleteVolume() | models.ExpandVolume() as data:
                return frozenset(self._volume_keys(data.cluster, data.volume_id, data.name))
            case models.CreateSnapshot() as data:
                snapshot_id = data.snapshot_id or derive_id("snapshot", event.id)
                keys = self._volume_keys(data.cluster, data.volume_id, data.volume)
                return frozenset(keys | self._snapshot_keys(data.cluster, snapshot_id, data.name))
            case models.DeleteSnapshot() as data:
                return frozenset(self._snapshot_keys(data.cluster, data.snapshot_id, data.name))
            case models.ListSnapshots():
                return frozenset()
            case models.CloneVolume() as data:
                clone_id = VolumeId(data.volume_id or derive_id("volume", event.id))
                keys = self._volume_keys(data.cluster, clone_id, data.name or volume_name_for(clone_id))
                if data.from_volume_id or data.from_volume:
                    keys |= self._volume_keys(data.cluster, data.from_volume_id, data.from_volume)
                else:
                    keys |= self._snapshot_keys(data.cluster, data.from_snapshot_id, data.from_snapshot)
                return frozenset(keys)
        return BARRIER

    def _volume_keys(self, cluster: str, volume_id: str | None, name: str | None) -> set[str]:
        """A volume's id and name keys, as far as the request and the state tell them."""
        state = self._state
        keys = {_id_key(volume_id)} if volume_id else {_name_key(cluster, name or "")}
        known = state.volume_by(ClusterId(cluster), volume_id, name)
        if known is not None:
            keys |= {_id_key(known.id), _name_key(known.cluster, known.name)}
        return keys

    def _snapshot_keys(self, cluster: str, snapshot_id: str | None, name: str | None) -> set[str]:
        """A snapshot's id and name keys, and its volume's: a snapshot request waits for its volume's."""
        state = self._state
        keys = {f"snapshot:{snapshot_id}"} if snapshot_id else set()
        keys |= {f"snapshot-name:{cluster}/{name}"} if name else set()
        known = state.snapshot_by(ClusterId(cluster), snapshot_id, name)
        if known is not None:
            keys |= {f"snapshot:{known.id}", f"snapshot-name:{known.cluster}/{known.name}"}
            keys |= self._volume_keys(cluster, known.volume, None)
        return keys

    async def handle(self, event: Event, intent: IntentWriter) -> Outcome:
        """The outcome of ``event``; every ProvisionerError becomes its failure result here."""
        worker = self._settings.worker
        request = Request(
            event=event,
            intent=intent,
            retrying=self._retrying.within(worker.request_deadline),
            rollback=self._retrying.within(worker.rollback_deadline),
            source=self._settings.source,
        )
        cluster = getattr(event.data, "cluster", None)
        try:
            return await self._route(request)
        except OperationFailed as e:
            note = self._placement.down_note(cluster, e.cause)
            return failed(
                event, e.cause, cluster=cluster, volume=e.volume, source=request.source, note=note, changes=e.changes
            )
        except ProvisionerError as e:
            note = self._placement.down_note(cluster, e)
            return failed(event, e, cluster=cluster, volume=None, source=request.source, note=note)

    async def _route(self, request: Request) -> Outcome:
        match request.event.data:
            case models.ProvisionVolume() as data:
                return await self.volumes.provision(request, data)
            case models.DeleteVolume() as data:
                return await self.volumes.delete(request, data)
            case models.ExpandVolume() as data:
                return await self.volumes.expand(request, data)
            case models.CloneVolume() as data:
                return await clone(self._storage, request, data)
            case models.CreateSnapshot() as data:
                return await self.snapshots.create(request, data)
            case models.DeleteSnapshot() as data:
                return await self.snapshots.delete(request, data)
            case models.ListSnapshots() as data:
                return self.snapshots.list(request, data)
            case models.LoadTopology() as data:
                return await self.topology.load(request, data)
            case models.AddNode() | models.NodeRef() | models.AddDevice() | models.DeviceRef() as data:
                return await self.topology.change(request, data)
        raise UnknownType(f"no handler for {request.event.type}")


def _id_key(volume: str) -> str:
    return f"id:{volume}"


def _name_key(cluster: str, name: str) -> str:
    return f"name:{cluster}/{name}"
