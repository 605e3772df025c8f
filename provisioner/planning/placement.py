"""Where placement may put bricks now: the topology, minus nodes that are down, within observed room.

The allocator is pure and plans against a ``Cluster``; this module hands it the cluster as it can be
used at this moment. Nodes the health prober reports down count as disabled, and each device offers
no more than its node reported room for (``ObservedSpace``). The derived cluster is the same
object while nothing changes, so the allocator keeps its placement index. When a plan fails only
because nodes are down, the failure says so (reason ``NodeDown``) and names them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar

from provisioner.domain import Cluster, ClusterId, DeviceId, DeviceSpace, Disperse, Durability, Replicate
from provisioner.errors import NoCapacity, NodeDown, NotEnoughNodes, NotEnoughZones, ProvisionerError, TemporaryError

T = TypeVar("T")


class NodeHealthView(Protocol):
    """Which storage nodes are down now (``provisioner.health.NodeHealth``); placement avoids them."""

    def down(self, cluster: str) -> Mapping[str, str]:
        """The enabled nodes of ``cluster`` that are down: manage host -> why."""
        ...


class NothingDown:
    """The health view without a prober: every node counts as up."""

    def down(self, cluster: str) -> Mapping[str, str]:
        return {}


class ObservedSpace:
    """The devices' room as the nodes last reported it (kept by the reconcile passes).

    Placement trusts the smaller of the topology's capacity and what is really there: at each
    observation a device's cap becomes ``min(capacity, bytes placed on it then + its free bytes then)``,
    so a filesystem or VG that filled up behind our back (other data, thin pools, a smaller disk than
    declared) gets no more bricks. The cap only changes when the node is read again, so the capped
    cluster is one object between observations and the allocator keeps its index.
    """

    def __init__(self) -> None:
        self.devices: dict[DeviceId, DeviceSpace] = {}
        self._caps: dict[DeviceId, int] = {}
        self._version = 0
        self._limited: dict[str, tuple[Cluster, int, Cluster]] = {}

    def update(self, spaces: tuple[DeviceSpace, ...], placed: Mapping[DeviceId, int]) -> None:
        """Record a node reading; ``placed`` is what desired state had on each device at that moment."""
        for space in spaces:
            self.devices[space.device] = space
            self._caps[space.device] = placed.get(space.device, 0) + space.free
        self._version += 1

    def limit(self, cluster: Cluster) -> Cluster:
        """``cluster`` with each observed device's capacity capped at what its node could hold."""
        cached = self._limited.get(cluster.id)
        if cached is not None and cached[0] is cluster and cached[1] == self._version:
            return cached[2]
        limited = cluster
        if any(d.id in self._caps and self._caps[d.id] < d.capacity for n in cluster.nodes for d in n.devices):
            nodes = tuple(
                dataclasses.replace(
                    node,
                    devices=tuple(
                        dataclasses.replace(d, capacity=min(d.capacity, self._caps.get(d.id, d.capacity)))
                        for d in node.devices
                    ),
                )
                for node in cluster.nodes
            )
            limited = dataclasses.replace(cluster, nodes=nodes)
        self._limited[cluster.id] = (cluster, self._version, limited)
        return limited


class Placement:
    def __init__(self, health: NodeHealthView | None = None, observed: ObservedSpace | None = None) -> None:
        self._health = health or NothingDown()
        self._observed = observed or ObservedSpace()
        # per cluster: (cluster, down hosts, the cluster without them) of the last plan with nodes down
        self._cache: dict[ClusterId, tuple[Cluster, frozenset[str], Cluster]] = {}

    def placed(self, cluster: Cluster, place: Callable[[Cluster], T], *, durability: Durability) -> T:
        """``place`` on the nodes that are up. When that fails while nodes are down, and would not
        with them, the failure is NodeDown naming them; otherwise it is the failure of the whole cluster."""
        placeable, down = self.placeable(cluster)
        try:
            return place(placeable)
        except NoCapacity as failure:
            if not down:
                raise
            place(self._observed.limit(cluster))  # raises when the down nodes are not what is missing
            raise _node_down(failure, down, placeable, durability) from failure

    def placeable(self, cluster: Cluster) -> tuple[Cluster, Mapping[str, str]]:
        """The cluster as placement may use it now, and the nodes left out as down (host -> why)."""
        cluster = self._observed.limit(cluster)
        reported = self._health.down(cluster.id)
        down = {n.manage: reported[n.manage] for n in cluster.nodes if n.enabled and n.manage in reported}
        if not down:
            return cluster, {}
        hosts = frozenset(down)
        cached = self._cache.get(cluster.id)
        if cached is not None and cached[0] is cluster and cached[1] == hosts:
            return cached[2], down
        nodes = tuple(dataclasses.replace(n, enabled=False) if n.manage in hosts else n for n in cluster.nodes)
        placeable = dataclasses.replace(cluster, nodes=nodes)
        self._cache[cluster.id] = (cluster, hosts, placeable)
        return placeable, down

    def down_note(self, cluster: str | None, error: ProvisionerError) -> str:
        """For a temporary failure in a cluster with nodes down: which ones and why (the likely cause,
        which gluster's own message, e.g. "Some of the peers are down", does not name)."""
        if cluster is None or not isinstance(error, TemporaryError) or isinstance(error, NodeDown):
            return ""
        down = self._health.down(cluster)
        return f"; nodes down: {_listed(down)}" if down else ""


def _node_down(failure: NoCapacity, down: Mapping[str, str], placeable: Cluster, durability: Durability) -> NodeDown:
    """The failure of a placement that only the down nodes could have satisfied."""
    usable = [n for n in placeable.nodes if n.enabled and any(d.enabled for d in n.devices)]
    need = durability.set_size
    match failure:
        case NotEnoughNodes():
            up = len(usable)
            what = f"{_kind(durability)} needs {need} nodes, {up} {'is' if up == 1 else 'are'} up"
        case NotEnoughZones():
            zones = len({n.zone for n in usable})
            what = f"{_kind(durability)} with strict zone checking needs {need} zones, {zones} have a node up"
        case _:
            what = f"{failure} (on the nodes that are up)"
    return NodeDown(f"{what}; down: {_listed(down)}")


def _kind(durability: Durability) -> str:
    match durability:
        case Replicate(replica=replica, arbiter=arbiter):
            return f"replica {replica}{' arbiter 1' if arbiter else ''}"
        case Disperse(data=data, redundancy=redundancy):
            return f"disperse {data}+{redundancy}"
    return "distribute"


def _listed(down: Mapping[str, str]) -> str:
    return ", ".join(f"{host} ({why})" for host, why in sorted(down.items()))
