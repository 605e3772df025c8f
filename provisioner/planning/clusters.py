"""Turning a topology declaration (Heketi's ``topology.json`` shape) into domain clusters.

Node and device ids are derived from the cluster id and hostnames/device names, so loading the
same file twice yields the same ids and a re-load is a no-op rather than a second cluster.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from provisioner.domain import BrickBackend, Cluster, ClusterId, Device, DeviceId, Node, NodeId, derive_id
from provisioner.errors import InvalidTopology, UnknownDevice, UnknownNode
from provisioner.events.models import (
    AddDevice,
    AddNode,
    DeviceRef,
    LoadTopology,
    Model,
    NodeRef,
    TopologyDevice,
    TopologyHostnames,
    TopologyNode,
    TopologyNodeInfo,
)


def cluster_from(request: LoadTopology) -> Cluster:
    nodes = []
    for entry in request.nodes:
        manage = entry.node.hostnames.manage[0]
        node_id = NodeId(derive_id(request.cluster, "node", manage))
        devices = tuple(
            Device(
                id=DeviceId(derive_id(node_id, "device", d.name)),
                name=d.name,
                capacity=d.capacity or 0,
                backend=BrickBackend(d.backend),
                enabled=d.enabled,
                tags=tuple(sorted(d.tags.items())),
            )
            for d in entry.devices
        )
        nodes.append(
            Node(
                id=node_id,
                manage=manage,
                storage=entry.node.hostnames.storage[0],
                zone=entry.node.zone,
                devices=devices,
                enabled=entry.node.enabled,
                tags=tuple(sorted(entry.node.tags.items())),
                manage_alternates=tuple(entry.node.hostnames.manage[1:]),
                storage_alternates=tuple(entry.node.hostnames.storage[1:]),
            )
        )
    return Cluster(id=ClusterId(request.cluster), nodes=tuple(nodes), brick_root=request.brick_root)


def declaration_of(cluster: Cluster) -> LoadTopology:
    """The topology declaration a cluster was loaded from (the inverse of ``cluster_from``)."""
    return LoadTopology(
        cluster=cluster.id,
        brick_root=cluster.brick_root,
        nodes=[
            TopologyNode(
                node=TopologyNodeInfo(
                    hostnames=TopologyHostnames(
                        manage=[n.manage, *n.manage_alternates], storage=[n.storage, *n.storage_alternates]
                    ),
                    zone=n.zone,
                    enabled=n.enabled,
                    tags=dict(n.tags),
                ),
                devices=[
                    TopologyDevice(
                        name=d.name,
                        backend=d.backend.value,
                        capacity=d.capacity or None,
                        enabled=d.enabled,
                        tags=dict(d.tags),
                    )
                    for d in n.devices
                ],
            )
            for n in cluster.nodes
        ],
    )


def changed(cluster: Cluster, change: Model) -> Cluster:
    """The cluster after a node or device change; raises InvalidTopology naming what is wrong."""
    declared = declaration_of(cluster)
    nodes = list(declared.nodes)
    index = {n.node.hostnames.manage[0]: i for i, n in enumerate(nodes)}
    match change:
        case AddNode(node=node):
            if node.node.hostnames.manage[0] in index:
                raise InvalidTopology(f"node {node.node.hostnames.manage[0]} is already in cluster {cluster.id}")
            nodes.append(node)
        case NodeRef(host=host) | AddDevice(host=host) | DeviceRef(host=host) if host not in index:
            raise UnknownNode(f"cluster {cluster.id} has no node {host}")
        case AddDevice(host=host, device=device):
            entry = nodes[index[host]]
            if any(d.name == device.name for d in entry.devices):
                raise InvalidTopology(f"node {host} already has device {device.name}")
            nodes[index[host]] = entry.model_copy(update={"devices": [*entry.devices, device]})
        case DeviceRef(host=host, name=name):
            entry = nodes[index[host]]
            if not any(d.name == name for d in entry.devices):
                raise UnknownDevice(f"node {host} has no device {name}")
            nodes[index[host]] = entry.model_copy(update={"devices": [d for d in entry.devices if d.name != name]})
        case NodeRef(host=host):
            del nodes[index[host]]
    return cluster_from(declared.model_copy(update={"nodes": nodes}))


def with_measured(cluster: Cluster, sizes: Mapping[DeviceId, int], *, bounded: bool = True) -> Cluster:
    """``cluster`` with each measured device's capacity what its node reported. ``bounded`` (a load):
    the capacity the cluster has is an upper bound, as declared (Heketi's devices declare none; a
    disk smaller than declared gets no more). Not bounded (a resync): the disk's size, whatever it was."""
    if not sizes:
        return cluster

    def measured(device: Device) -> int:
        size = sizes[device.id]
        return min(device.capacity or size, size) if bounded else size

    nodes = tuple(
        dataclasses.replace(
            node,
            devices=tuple(dataclasses.replace(d, capacity=measured(d)) if d.id in sizes else d for d in node.devices),
        )
        for node in cluster.nodes
    )
    return dataclasses.replace(cluster, nodes=nodes)


def device_named(cluster: Cluster, host: str, name: str) -> tuple[Node, Device]:
    """The device ``name`` of the node managed at ``host``; UnknownNode / UnknownDevice otherwise."""
    for node in cluster.nodes:
        if node.manage == host:
            for device in node.devices:
                if device.name == name:
                    return node, device
            raise UnknownDevice(f"node {host} has no device {name}")
    raise UnknownNode(f"cluster {cluster.id} has no node {host}")


def with_enabled(cluster: Cluster, change: NodeRef | DeviceRef, *, enabled: bool) -> Cluster:
    """The cluster with one node or device enabled or disabled (the allocator skips disabled ones)."""
    nodes = []
    for node in cluster.nodes:
        if node.manage == change.host:
            if isinstance(change, NodeRef):
                node = dataclasses.replace(node, enabled=enabled)
            else:
                if not any(d.name == change.name for d in node.devices):
                    raise UnknownDevice(f"node {change.host} has no device {change.name}")
                node = dataclasses.replace(
                    node,
                    devices=tuple(
                        dataclasses.replace(d, enabled=enabled) if d.name == change.name else d for d in node.devices
                    ),
                )
        nodes.append(node)
    if all(n.manage != change.host for n in cluster.nodes):
        raise UnknownNode(f"cluster {cluster.id} has no node {change.host}")
    return dataclasses.replace(cluster, nodes=tuple(nodes))
