"""Turning command-line arguments into request events (and a Heketi topology file into loads).

Every value goes through the same pydantic models a producer's event must pass, so the CLI can
build nothing the daemon would refuse, and a mistake is reported before anything is sent.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from provisioner.cli.parser import size
from provisioner.errors import InvalidTopology, ProvisionerError
from provisioner.events import catalog, models
from provisioner.events.envelope import Event, new_event

M = TypeVar("M", bound=models.Model)
SOURCE = "/provisioner/cli"


def events_of(args: argparse.Namespace) -> list[tuple[Event, str]]:
    """The request events a producer command stands for, each with its Kafka key (the cluster)."""
    events: list[tuple[Event, str]]
    if args.command == "topology":
        events = []
        for data in requests_from_file(args.file, cluster=args.cluster, brick_root=args.brick_root):
            events.append((new_event(catalog.TOPOLOGY_LOAD_REQUESTED, data, source=SOURCE), data.cluster))
    elif args.command in ("node", "device"):
        type_, change = topology_change(args)
        events = [(new_event(type_, change, source=SOURCE), args.cluster)]
    elif args.command == "snapshot":
        type_, snapshot = snapshot_request(args)
        events = [(new_event(type_, snapshot, source=SOURCE), args.cluster)]
    elif args.request == "clone":
        fields = ("volume_id", "name", "gid", "from_snapshot", "from_snapshot_id", "from_volume", "from_volume_id")
        copy = validated(models.CloneVolume, {"cluster": args.cluster, **{f: getattr(args, f) for f in fields}})
        events = [(new_event(catalog.CLONE_REQUESTED, copy, source=SOURCE), copy.cluster)]
    elif args.request == "provision":
        provision = provision_data(args)
        events = [(new_event(catalog.PROVISION_REQUESTED, provision, source=SOURCE), provision.cluster)]
    elif args.request == "expand":
        grow = validated(
            models.ExpandVolume,
            {"cluster": args.cluster, "size": args.size, "volume_id": args.volume_id, "name": args.name},
        )
        events = [(new_event(catalog.EXPAND_REQUESTED, grow, source=SOURCE), grow.cluster)]
    else:
        delete = validated(
            models.DeleteVolume, {"cluster": args.cluster, "volume_id": args.volume_id, "name": args.name}
        )
        events = [(new_event(catalog.DELETE_REQUESTED, delete, source=SOURCE), delete.cluster)]

    return events


def snapshot_request(args: argparse.Namespace) -> tuple[str, models.Model]:
    if args.snapshot == "create":
        fields = {"volume": args.volume, "volume_id": args.volume_id, "name": args.name}
        return catalog.SNAPSHOT_CREATE_REQUESTED, validated(models.CreateSnapshot, {"cluster": args.cluster, **fields})
    if args.snapshot == "delete":
        fields = {"name": args.name, "snapshot_id": args.snapshot_id}
        return catalog.SNAPSHOT_DELETE_REQUESTED, validated(models.DeleteSnapshot, {"cluster": args.cluster, **fields})
    fields = {"volume": args.volume, "volume_id": args.volume_id}
    return catalog.SNAPSHOT_LIST_REQUESTED, validated(models.ListSnapshots, {"cluster": args.cluster, **fields})


def topology_change(args: argparse.Namespace) -> tuple[str, models.Model]:
    action = args.node if args.command == "node" else args.device
    type_ = f"{catalog.PREFIX}.{args.command}.{action}.requested.v1"
    if args.command == "node" and action == "add":
        devices = []
        for item in args.device:
            path, colon, capacity = item.rpartition(":")
            if not colon:
                raise ProvisionerError(f"--device {item!r}: write PATH:CAPACITY, e.g. /srv/devices/d1:100GiB")
            devices.append({"name": path, "backend": "file", "capacity": size(capacity)})
        node = {
            "node": {
                "hostnames": {"manage": [args.manage], "storage": [args.storage or args.manage]},
                "zone": args.zone,
            },
            "devices": devices,
        }
        return type_, validated(models.AddNode, {"cluster": args.cluster, "node": node})
    evacuate = {"evacuate": True} if getattr(args, "evacuate", False) else {}
    if args.command == "node":
        return type_, validated(models.NodeRef, {"cluster": args.cluster, "host": args.host, **evacuate})
    if action == "add":
        device = {
            "name": args.name,
            "backend": args.backend,
            "capacity": args.capacity,
            "destroydata": args.destroydata,
        }
        return type_, validated(models.AddDevice, {"cluster": args.cluster, "host": args.host, "device": device})
    return type_, validated(
        models.DeviceRef, {"cluster": args.cluster, "host": args.host, "name": args.name, **evacuate}
    )


def provision_data(args: argparse.Namespace) -> models.ProvisionVolume:
    durability: dict[str, Any] = {"type": "replicate", "replica": args.replica or 3}
    if args.arbiter:
        durability = {"type": "replicate", "replica": 3, "arbiter": True}
    elif args.distribute:
        durability = {"type": "none"}
    elif args.disperse:
        data, plus, redundancy = args.disperse.partition("+")
        if not (plus and data.isdigit() and redundancy.isdigit()):
            raise ProvisionerError(f"--disperse {args.disperse!r}: write DATA+REDUNDANCY, e.g. 2+1")
        durability = {"type": "disperse", "data": int(data), "redundancy": int(redundancy)}
    options = {}
    for item in args.option:
        key, eq, value = item.partition("=")
        if not eq:
            raise ProvisionerError(f"--option {item!r}: write KEY=VALUE, e.g. performance.read-ahead=off")
        options[key] = value
    return validated(
        models.ProvisionVolume,
        {
            "cluster": args.cluster,
            "size": args.size,
            "durability": durability,
            "name": args.name,
            "volume_id": args.volume_id,
            "gid": args.gid,
            "options": options,
            "zone_checking": args.zone_checking,
            "device_tag_match": args.device_tag_match,
        },
    )


def validated(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise ProvisionerError(f"invalid request: {problems}") from e


def requests_from_file(path: Path, *, cluster: str | None, brick_root: str | None = None) -> list[models.LoadTopology]:
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
            requests.append(models.LoadTopology.model_validate(data))
        except ValidationError as e:
            problems = "; ".join(
                f"clusters[{index}].{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()[:5]
            )
            raise InvalidTopology(f"{path}: {problems}") from e
    return requests
