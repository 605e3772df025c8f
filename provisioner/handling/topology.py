"""Topology requests: load a cluster, add / remove / enable / disable a node or device.

Removal is refused while bricks remain on what leaves, unless the request asks to evacuate: then
every brick moves off first (``handling.evacuation``). New nodes are peer-probed and new devices
prepared; nodes that leave are detached. The answer is always the cluster as it is now, recorded
in the state topic with the answer. Topology requests are barriers in their lane: nothing else of
the cluster runs while one does.
"""

from __future__ import annotations

import functools

from provisioner.delivery.outcome import Outcome
from provisioner.domain import Cluster
from provisioner.errors import DeviceInUse, InvalidTopology
from provisioner.events import models, results
from provisioner.handling.evacuation import evacuate
from provisioner.handling.request import Request, Storage
from provisioner.handling.results import succeeded
from provisioner.planning.clusters import changed, cluster_from, with_enabled
from provisioner.state import StateChange

TopologyChange = models.AddNode | models.NodeRef | models.AddDevice | models.DeviceRef


class TopologyRequests:
    def __init__(self, storage: Storage) -> None:
        """Topology changes share the volume requests' state, node operations and placement locks."""
        self._storage = storage

    def load(self, request: Request, data: models.LoadTopology) -> Outcome:
        cluster = cluster_from(data)
        known = {d.id for n in cluster.nodes for d in n.devices}
        for volume in self._storage.state.volumes_of(cluster.id):
            missing = [b for b in volume.bricks if b.device not in known]
            if missing:
                raise DeviceInUse(
                    f"the new topology drops device {missing[0].device}, which holds a brick of volume "
                    f"{volume.name}; delete or move the volume first"
                )
        return _now(request, cluster)

    async def change(self, request: Request, data: TopologyChange) -> Outcome:
        """Add, remove, enable or disable a node or device."""
        storage = self._storage
        cluster = storage.state.require_cluster(data.cluster)
        action = request.event.type.split(".")[3]  # add, remove, enable, disable
        evacuating = isinstance(data, models.NodeRef | models.DeviceRef) and data.evacuate
        if evacuating and action != "remove":
            raise InvalidTopology(f"evacuate applies to remove only, not to {action}")
        if action in ("enable", "disable"):
            assert isinstance(data, models.NodeRef | models.DeviceRef)
            new = with_enabled(cluster, data, enabled=action == "enable")
        else:
            new = changed(cluster, data)
        if evacuating:
            await evacuate(storage, request, cluster, new)
        _refuse_leaving_bricks(cluster, new, storage)
        await self._apply(request, cluster, new)
        return _now(request, new)

    async def _apply(self, request: Request, cluster: Cluster, new: Cluster) -> None:
        """Probe the nodes that arrive, prepare the devices that arrive, detach the nodes that leave."""
        ops, retrying = self._storage.ops, request.retrying
        before = {n.id for n in cluster.nodes}
        after = {n.id for n in new.nodes}
        old_devices = {d.id for n in cluster.nodes for d in n.devices}
        for node in new.nodes:
            if node.id not in before:
                await retrying(functools.partial(ops.probe, cluster.nodes, node), what=f"probe {node.manage}")
            for device in node.devices:
                if device.id not in old_devices:
                    await retrying(functools.partial(ops.prepare_device, node, device), what=f"prepare {device.name}")
        for node in cluster.nodes:
            if node.id not in after:
                others = [n for n in cluster.nodes if n.id != node.id]
                await retrying(functools.partial(ops.detach, others, node), what=f"detach {node.manage}")


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
