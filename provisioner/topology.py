"""Turning a topology declaration (Heketi's ``topology.json`` shape) into domain clusters.

Node and device ids are derived from the cluster id and hostnames/device names, so loading the
same file twice yields the same ids and a re-load is a no-op rather than a second cluster.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from provisioner.domain import BrickBackend, Cluster, ClusterId, Device, DeviceId, Node, NodeId, derive_id
from provisioner.errors import InvalidTopology
from provisioner.events.models import LoadTopology


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
            )
        )
    return Cluster(id=ClusterId(request.cluster), nodes=tuple(nodes), brick_root=request.brick_root)


def requests_from_file(path: Path, *, cluster: str | None, brick_root: str | None = None) -> list[LoadTopology]:
    """Read a Heketi topology file: one LoadTopology per cluster entry.

    A cluster entry may carry an ``"id"`` (our extension); otherwise ``cluster`` names it, which is
    only unambiguous when the file has one cluster.
    """
    try:
        document = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InvalidTopology(f"{path}: {e}") from e
    clusters = document.get("clusters") if isinstance(document, dict) else None
    if not isinstance(clusters, list) or not clusters:
        raise InvalidTopology(f'{path}: expected {{"clusters": [{{"nodes": [...]}}, ...]}}')
    requests = []
    for index, entry in enumerate(clusters):
        if not isinstance(entry, dict):
            raise InvalidTopology(f"{path}: clusters[{index}] is not an object")
        cluster_id = entry.get("id") or cluster
        if cluster_id is None or (cluster is not None and len(clusters) > 1 and "id" not in entry):
            raise InvalidTopology(
                f'{path}: clusters[{index}] has no "id"; pass --cluster (only for a file with one cluster)'
            )
        data: dict[str, Any] = {"cluster": cluster_id, "nodes": entry.get("nodes", [])}
        if brick_root or entry.get("brick_root"):
            data["brick_root"] = brick_root or entry["brick_root"]
        for node in data["nodes"]:
            if isinstance(node, dict):  # Heketi accepts bare device paths
                node["devices"] = [{"name": d} if isinstance(d, str) else d for d in node.get("devices", [])]
        try:
            requests.append(LoadTopology.model_validate(data))
        except ValidationError as e:
            problems = "; ".join(
                f"clusters[{index}].{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()[:5]
            )
            raise InvalidTopology(f"{path}: {problems}") from e
    return requests
