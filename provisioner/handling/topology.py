"""Topology requests: load a cluster, add / remove / enable / disable a node or device.

A load does what Heketi's ``topology load`` does: every node not yet in the cluster is peer-probed
into the pool, and every device is prepared (an lvm device must be empty, or marked
``destroydata``) and measured, its capacity then being what the node reports, the declared one
only an upper bound. A re-load is idempotent: prepared devices are found as they are and measured
again. The cluster is recorded only when every device is ready; otherwise the answer names each
device that is not, its node and what was found on it.

Removal is refused while bricks remain on what leaves, unless the request asks to evacuate: then
every brick moves off first (``handling.evacuation``). New nodes are peer-probed and new devices
prepared; nodes that leave are detached. The answer is always the cluster as it is now, recorded
in the state topic with the answer. Topology requests are barriers in their lane: nothing else of
the cluster runs while one does.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

from provisioner.delivery.outcome import Outcome
from provisioner.domain import Cluster, Device, Node
from provisioner.errors import DeviceInUse, DeviceNotEmpty, InvalidTopology, ProvisionerError
from provisioner.events import models, results
from provisioner.handling.evacuation import evacuate
from provisioner.handling.request import Request, Storage
from provisioner.handling.results import succeeded
from provisioner.planning.clusters import changed, cluster_from, device_named, with_enabled, with_measured
from provisioner.state import StateChange

TopologyChange = models.AddNode | models.NodeRef | models.AddDevice | models.DeviceRef


class TopologyRequests:
    def __init__(self, storage: Storage) -> None:
        """Topology changes share the volume requests' state, node operations and placement locks."""
        self._storage = storage

    async def load(self, request: Request, data: models.LoadTopology) -> Outcome:
        cluster = cluster_from(data)
        known = {d.id for n in cluster.nodes for d in n.devices}
        for volume in self._storage.state.volumes_of(cluster.id):
            missing = [b for b in volume.bricks if b.device not in known]
            if missing:
                raise DeviceInUse(
                    f"the new topology drops device {missing[0].device}, which holds a brick of volume "
                    f"{volume.name}; delete or move the volume first"
                )
        recorded = self._storage.state.clusters.get(cluster.id) or Cluster(id=cluster.id)
        wipe = {
            (entry.node.hostnames.manage[0], d.name) for entry in data.nodes for d in entry.devices if d.destroydata
        }
        await self._probe(request, recorded, cluster)
        measured = await self._prepare(request, cluster, lambda node, device: True, wipe)
        return _now(request, measured)

    async def change(self, request: Request, data: TopologyChange) -> Outcome:
        """Add, remove, enable or disable a node or device."""
        storage = self._storage
        cluster = storage.state.require_cluster(data.cluster)
        action = request.event.type.split(".")[3]  # add, remove, enable, disable, resync
        evacuating = isinstance(data, models.NodeRef | models.DeviceRef) and data.evacuate
        if evacuating and action != "remove":
            raise InvalidTopology(f"evacuate applies to remove only, not to {action}")
        if action == "resync":
            assert isinstance(data, models.DeviceRef)
            return _now(request, await self._resync(request, cluster, data))
        if action in ("enable", "disable"):
            assert isinstance(data, models.NodeRef | models.DeviceRef)
            new = with_enabled(cluster, data, enabled=action == "enable")
        else:
            new = changed(cluster, data)
        if evacuating:
            await evacuate(storage, request, cluster, new)
        _refuse_leaving_bricks(cluster, new, storage)
        new = await self._apply(request, cluster, new, data)
        return _now(request, new)

    async def _apply(self, request: Request, cluster: Cluster, new: Cluster, data: TopologyChange) -> Cluster:
        """Probe the nodes that arrive, prepare the devices that arrive, detach the nodes that leave."""
        ops, retrying = self._storage.ops, request.retrying
        await self._probe(request, cluster, new)
        old_devices = {d.id for n in cluster.nodes for d in n.devices}
        wipe = _destroying(data)
        new = await self._prepare(request, new, lambda node, device: device.id not in old_devices, wipe)
        after = {n.id for n in new.nodes}
        for node in cluster.nodes:
            if node.id not in after:
                others = [n for n in cluster.nodes if n.id != node.id]
                await retrying(functools.partial(ops.detach, others, node), what=f"detach {node.manage}")
        return new

    async def _resync(self, request: Request, cluster: Cluster, data: models.DeviceRef) -> Cluster:
        """Heketi's ``device resync``: take in a disk that grew, and record the size it has now."""
        node, device = device_named(cluster, data.host, data.name)
        spec = self._storage.ops.device_spec(cluster.id, node, device)
        size = await request.retrying(
            functools.partial(self._storage.ops.resync_device, spec), what=f"resync {device.name} on {node.manage}"
        )
        return cluster if size is None else with_measured(cluster, {device.id: size}, bounded=False)

    async def _probe(self, request: Request, cluster: Cluster, new: Cluster) -> None:
        """Peer-probe each node of ``new`` not in ``cluster`` from the members so far, one at a time:
        the pool grows by one verified node per step."""
        ops = self._storage.ops
        members = [n for n in cluster.nodes if any(m.id == n.id for m in new.nodes)]
        for node in new.nodes:
            if all(m.id != node.id for m in members):
                await request.retrying(functools.partial(ops.probe, members, node), what=f"probe {node.manage}")
                members.append(node)

    async def _prepare(
        self, request: Request, cluster: Cluster, chosen: Callable[[Node, Device], bool], wipe: set[tuple[str, str]]
    ) -> Cluster:
        """Prepare and measure the ``chosen`` devices, all nodes at once; ``cluster`` with their measured
        capacities. Every device is tried; if any is not ready, one error names each that is not."""
        ops = self._storage.ops
        work = [(n, d) for n in cluster.nodes for d in n.devices if chosen(n, d)]

        async def ready(node: Node, device: Device) -> int | None:
            spec = ops.device_spec(cluster.id, node, device, destroy_data=(node.manage, device.name) in wipe)
            return await request.retrying(
                functools.partial(ops.prepare_device, spec), what=f"prepare {device.name} on {node.manage}"
            )

        outcomes = await asyncio.gather(*(ready(n, d) for n, d in work), return_exceptions=True)
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            raise _not_ready(failures, len(work))
        sizes = {d.id: size for (_, d), size in zip(work, outcomes, strict=True) if isinstance(size, int)}
        return with_measured(cluster, sizes)


def _destroying(data: TopologyChange) -> set[tuple[str, str]]:
    """The (node, device) a change may wipe: the devices it adds with ``destroydata``."""
    match data:
        case models.AddDevice(host=host, device=device) if device.destroydata:
            return {(host, device.name)}
        case models.AddNode(node=node):
            return {(node.node.hostnames.manage[0], d.name) for d in node.devices if d.destroydata}
    return set()


def _not_ready(failures: list[BaseException], tried: int) -> BaseException:
    """One error for the devices that are not ready: the failure itself when it is one, else every
    message under the class they share (InvalidTopology when they differ)."""
    if len(failures) == 1 or not all(isinstance(f, ProvisionerError) for f in failures):
        return next((f for f in failures if not isinstance(f, ProvisionerError)), failures[0])
    kinds = {type(f) for f in failures}
    kind = kinds.pop() if len(kinds) == 1 and DeviceNotEmpty in kinds else InvalidTopology
    return kind(f"{len(failures)} of {tried} devices are not ready: " + "; ".join(str(f) for f in failures))


def _refuse_leaving_bricks(cluster: Cluster, new: Cluster, storage: Storage) -> None:
    used = {b.device for v in storage.state.volumes_of(cluster.id) for b in v.bricks}
    kept = {d.id for n in new.nodes for d in n.devices}
    for node in cluster.nodes:
        for device in node.devices:
            if device.id in used and device.id not in kept:
                raise DeviceInUse(
                    f"{device.name} on {node.manage} still holds bricks; delete or move those volumes first"
                )


def _now(request: Request, cluster: Cluster) -> Outcome:
    """The answer to any topology request: the cluster as it is now, recorded in the state topic."""
    now = results.TopologyLoaded(
        request_id=request.event.id,
        cluster=cluster.id,
        nodes=len(cluster.nodes),
        devices=sum(len(n.devices) for n in cluster.nodes),
    )
    return succeeded(
        request.event,
        now,
        key=cluster.id,
        subject=cluster.id,
        source=request.source,
        changes=(StateChange.put_cluster(cluster),),
    )
