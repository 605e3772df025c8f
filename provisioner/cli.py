"""The ``provisioner`` command: the daemon, the producer side, and tools.

Settings come from the environment (``PROVISIONER_<GROUP>__<FIELD>``) or ``--env-file``; flags such
as ``--bootstrap`` override them. Exit codes: 0 success, 1 the request failed, 2 bad usage or
settings, 3 no result within ``--timeout``, 4 Kafka unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from provisioner import __version__, app
from provisioner.bus import client
from provisioner.bus.state_topic import StateTopicReader
from provisioner.errors import ConfigError, ProvisionerError, TemporaryError
from provisioner.events import asyncapi, models
from provisioner.events.envelope import Event, new_event
from provisioner.events.schema import schemas
from provisioner.planning.clusters import requests_from_file
from provisioner.reconcile import runs as reconciler
from provisioner.reconcile.drift import Drift
from provisioner.settings import ENV_PREFIX, Settings
from provisioner.state import DesiredState
from provisioner.units import format_size, parse_size
from provisioner.watch import watcher

M = TypeVar("M", bound=models.Model)

EXAMPLES = """\
examples:
  provisioner run                                   # the daemon
  provisioner watch                                 # claims of our StorageClasses -> requests
  provisioner topology load topology.json --cluster dev --wait
  provisioner request provision --cluster dev --size 1GiB --replica 3 --wait
  provisioner request provision --cluster dev --size 10GiB --disperse 2+1 --name media --wait
  provisioner request expand --cluster dev --name media --size 20GiB --wait
  provisioner request delete --cluster dev --name media --wait
  provisioner reconcile --cluster dev              # drift between desired state and the nodes
  provisioner reconcile --cluster dev --repair     # ... and remove orphans
  provisioner schemas export schemas/

settings (environment, or KEY=VALUE lines in --env-file):
  PROVISIONER_KAFKA__BOOTSTRAP=host:9092   PROVISIONER_SSH__KEY_FILE=/path/id_ed25519
  PROVISIONER_SSH__KNOWN_HOSTS=/path/known_hosts   PROVISIONER_HTTP__PORT=9464   (see README)
  PROVISIONER_KUBERNETES__ENABLED=true   PROVISIONER_KUBERNETES__KUBECONFIG=/path/kubeconfig (unset in a pod)
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="provisioner",
        description="Event-driven GlusterFS volume provisioner: requests in on Kafka, volumes out on the nodes.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--env-file", type=Path, help="file of PROVISIONER_* settings (KEY=VALUE lines)")
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (overrides PROVISIONER_KAFKA__BOOTSTRAP)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("run", help="run the provisioning daemon", description="Consume requests and provision.")
    commands.add_parser(
        "watch",
        help="bridge Kubernetes claims to requests",
        description=(
            "Watch PersistentVolumeClaims whose StorageClass names PROVISIONER_KUBERNETES__PROVISIONER_NAME and "
            "send provision requests; PVs of ours Released under policy Delete become delete requests, claim "
            "resizes expand requests. Holds a Lease in PROVISIONER_KUBERNETES__NAMESPACE so that one watcher "
            "acts at a time; run two for availability. Uses PROVISIONER_KUBERNETES__KUBECONFIG, or the pod's "
            "service account when unset."
        ),
    )

    request = commands.add_parser("request", help="publish a volume request").add_subparsers(
        dest="request", required=True, metavar="REQUEST"
    )
    provision = request.add_parser("provision", help="create a volume")
    provision.add_argument("--cluster", required=True, help="cluster id (the Kafka key)")
    provision.add_argument("--size", required=True, type=_size, help="e.g. 1GiB, 500Mi, 10G")
    layout = provision.add_mutually_exclusive_group()
    layout.add_argument("--replica", type=int, help="replica count (default 3)")
    layout.add_argument("--arbiter", action="store_true", help="replica 3 with an arbiter brick")
    layout.add_argument("--disperse", metavar="DATA+REDUNDANCY", help="erasure coding, e.g. 2+1 or 4+2")
    layout.add_argument("--distribute", action="store_true", help="no redundancy")
    provision.add_argument("--name", help="gluster volume name (default vol_<id>)")
    provision.add_argument("--volume-id", help="32-hex volume id (default derived from the request id)")
    provision.add_argument("--gid", type=int, help="group owning the brick root (chmod 2775)")
    provision.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="gluster option")
    provision.add_argument("--zone-checking", choices=["strict", "none"], default="none")
    _wait_flags(provision)

    expand = request.add_parser("expand", help="grow a volume by whole brick sets")
    expand.add_argument("--cluster", required=True)
    expand.add_argument("--size", required=True, type=_size, help="the new total size, e.g. 2GiB")
    grow_target = expand.add_mutually_exclusive_group(required=True)
    grow_target.add_argument("--volume-id")
    grow_target.add_argument("--name")
    _wait_flags(expand)

    delete = request.add_parser("delete", help="delete a volume and its bricks")
    delete.add_argument("--cluster", required=True)
    target = delete.add_mutually_exclusive_group(required=True)
    target.add_argument("--volume-id")
    target.add_argument("--name")
    _wait_flags(delete)

    topology = commands.add_parser("topology", help="cluster topology").add_subparsers(
        dest="topology", required=True, metavar="ACTION"
    )
    load = topology.add_parser("load", help="load a Heketi-format topology.json")
    load.add_argument("file", type=Path)
    load.add_argument("--cluster", help='cluster id when the file\'s cluster has no "id"')
    load.add_argument("--brick-root", help="where bricks are mounted on the nodes")
    _wait_flags(load)

    node = commands.add_parser("node", help="add, remove, enable or disable a storage node").add_subparsers(
        dest="node", required=True, metavar="ACTION"
    )
    node_add = node.add_parser("add", help="add a node (peer-probed into the pool)")
    node_add.add_argument("--cluster", required=True)
    node_add.add_argument("--manage", required=True, help="hostname SSH goes to")
    node_add.add_argument("--storage", help="hostname of the bricks (default: --manage)")
    node_add.add_argument("--zone", type=int, default=1)
    node_add.add_argument(
        "--device",
        action="append",
        default=[],
        metavar="PATH:CAPACITY",
        help="a file-backend device, e.g. /srv/d1:100GiB",
    )
    _wait_flags(node_add)
    for action, text in (
        ("remove", "remove a node (refused while it holds bricks, unless --evacuate)"),
        ("enable", "let the allocator use a node"),
        ("disable", "keep new bricks off a node"),
    ):
        ref = node.add_parser(action, help=text)
        ref.add_argument("--cluster", required=True)
        ref.add_argument("--host", required=True, help="the node's manage hostname")
        if action == "remove":
            _evacuate_flag(ref, "node")
        _wait_flags(ref)
    device = commands.add_parser("device", help="add, remove, enable or disable a device").add_subparsers(
        dest="device", required=True, metavar="ACTION"
    )
    for action, text in (
        ("add", "add a device to a node"),
        ("remove", "remove a device (refused while it holds bricks, unless --evacuate)"),
        ("enable", "let the allocator use a device"),
        ("disable", "keep new bricks off a device"),
    ):
        dev = device.add_parser(action, help=text)
        dev.add_argument("--cluster", required=True)
        dev.add_argument("--host", required=True, help="the node's manage hostname")
        dev.add_argument("--name", required=True, help="device path (a directory for the file backend)")
        if action == "add":
            dev.add_argument("--capacity", type=_size, help="bytes for bricks (file backend), e.g. 100GiB")
            dev.add_argument("--backend", choices=["file", "lvm"], default="file")
        if action == "remove":
            _evacuate_flag(dev, "device")
        _wait_flags(dev)

    state = commands.add_parser("state", help="desired state from the state topic").add_subparsers(
        dest="state", required=True, metavar="ACTION"
    )
    show = state.add_parser("show", help="print clusters and volumes as a table or JSON")
    show.add_argument("--cluster", help="only this cluster")
    show.add_argument("--json", action="store_true", help="machine-readable output")

    reconcile = commands.add_parser(
        "reconcile",
        help="compare desired state with the nodes; --repair removes what nobody owns",
        description=(
            "Read every node of the cluster(s) (tagged brick images and LVs, brick mounts, gluster volumes), "
            "then desired state, and print the drift: orphan_volume / orphan_brick (ours, named by no record), "
            "missing_volume / missing_brick (recorded, not on the nodes), interrupted (a record stuck in "
            "creating/expanding/deleting). Only things carrying this deployment's owner tag (its state topic) "
            "count. Exit 0 when no drift is left, 1 otherwise."
        ),
    )
    reconcile.add_argument("--cluster", help="only this cluster")
    reconcile.add_argument(
        "--repair",
        action="store_true",
        help="remove orphans (re-checked first) and resend the request of each stale interrupted record",
    )
    reconcile.add_argument(
        "--stale-after",
        type=float,
        default=900.0,
        metavar="SECONDS",
        help="an interrupted record older than this is repaired (default 900: a running request is left alone)",
    )
    reconcile.add_argument("--json", action="store_true", help="machine-readable output")

    export = commands.add_parser("schemas", help="event JSON Schemas").add_subparsers(
        dest="schemas", required=True, metavar="ACTION"
    )
    export_cmd = export.add_parser("export", help="write one JSON Schema per event type")
    export_cmd.add_argument("directory", type=Path, nargs="?", default=Path("schemas"))
    return parser


def _evacuate_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--evacuate",
        action="store_true",
        help=(
            f"first move every brick off the {what} to other devices (gluster replace-brick ... commit force; "
            "self-heal then copies the data), never next to another brick of its replica/disperse set; "
            "fails with CannotEvacuate, before touching anything, if a distribute volume has a brick there"
        ),
    )


def _wait_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", action="store_true", help="wait for the result and print it")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait (default 600)")
    parser.add_argument("--json", action="store_true", help="print the result event as JSON")


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def load_settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if args.bootstrap:
        overrides["kafka"] = {"bootstrap": args.bootstrap}
    if args.log_level:
        overrides["log_level"] = args.log_level
    env_file = args.env_file
    if env_file is not None and not env_file.is_file():
        raise SettingsProblem(f"--env-file {env_file}: no such file")
    try:
        settings = Settings(_env_file=env_file, **overrides)
    except ValidationError as e:
        problems = [f"{ENV_PREFIX}{'__'.join(str(p).upper() for p in err['loc'])}: {err['msg']}" for err in e.errors()]
        raise SettingsProblem("invalid settings:\n  " + "\n  ".join(problems)) from e
    if args.command == "run":
        for name, path in (
            ("SSH__KEY_FILE", settings.ssh.key_file),
            ("SSH__KNOWN_HOSTS", settings.ssh.known_hosts),
        ):
            if not path.is_file():
                raise SettingsProblem(f"{ENV_PREFIX}{name}: {path} does not exist")
    kube = settings.kubernetes
    uses_kube = args.command == "watch" or (args.command == "run" and kube.enabled)
    if uses_kube and kube.kubeconfig is not None and not kube.kubeconfig.is_file():
        raise SettingsProblem(f"{ENV_PREFIX}KUBERNETES__KUBECONFIG: {kube.kubeconfig} does not exist")
    return settings


class SettingsProblem(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "schemas":
        return _export_schemas(args.directory)
    try:
        settings = load_settings(args)
    except SettingsProblem as e:
        print(f"provisioner: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("aiokafka", "asyncssh", "kubernetes_asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        if args.command == "run":
            asyncio.run(app.run(settings))
            return 0
        if args.command == "watch":
            asyncio.run(watcher.run(settings))
            return 0
        if args.command == "reconcile":
            report = asyncio.run(
                reconciler.reconcile(settings, cluster=args.cluster, repair=args.repair, stale_after=args.stale_after)
            )
            print(_render_report(report, as_json=args.json))
            return 1 if report.left else 0
        if args.command == "state":
            print(asyncio.run(_show_state(settings, cluster=args.cluster, as_json=args.json)))
            return 0
        return asyncio.run(_produce(args, settings))
    except ProvisionerError as e:
        print(f"provisioner: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 4 if isinstance(e, TemporaryError) else 1
    except KeyboardInterrupt:
        return 130


async def _produce(args: argparse.Namespace, settings: Settings) -> int:
    events: list[tuple[Event, str]]
    if args.command == "topology":
        events = []
        for data in requests_from_file(args.file, cluster=args.cluster, brick_root=args.brick_root):
            events.append((new_event(models.TOPOLOGY_LOAD_REQUESTED, data, source="/provisioner/cli"), data.cluster))
    elif args.command in ("node", "device"):
        type_, change = _topology_change(args)
        events = [(new_event(type_, change, source="/provisioner/cli"), args.cluster)]
    elif args.request == "provision":
        provision = _provision_data(args)
        events = [(new_event(models.PROVISION_REQUESTED, provision, source="/provisioner/cli"), provision.cluster)]
    elif args.request == "expand":
        grow = _validated(
            models.ExpandVolume,
            {"cluster": args.cluster, "size": args.size, "volume_id": args.volume_id, "name": args.name},
        )
        events = [(new_event(models.EXPAND_REQUESTED, grow, source="/provisioner/cli"), grow.cluster)]
    else:
        delete = _validated(
            models.DeleteVolume, {"cluster": args.cluster, "volume_id": args.volume_id, "name": args.name}
        )
        events = [(new_event(models.DELETE_REQUESTED, delete, source="/provisioner/cli"), delete.cluster)]

    status = 0
    for event, key in events:
        result = await client.request(settings.kafka, event, key=key, wait=args.timeout if args.wait else None)
        if result is None:
            print(f"published {event.type} id={event.id} key={key}")
            continue
        print(_render(result, as_json=args.json))
        if ".failed." in result.type:
            status = 1
    return status


def _topology_change(args: argparse.Namespace) -> tuple[str, models.Model]:
    action = args.node if args.command == "node" else args.device
    type_ = f"{models.PREFIX}.{args.command}.{action}.requested.v1"
    if args.command == "node" and action == "add":
        devices = []
        for item in args.device:
            path, colon, capacity = item.rpartition(":")
            if not colon:
                raise ProvisionerError(f"--device {item!r}: write PATH:CAPACITY, e.g. /srv/devices/d1:100GiB")
            devices.append({"name": path, "backend": "file", "capacity": _size(capacity)})
        node = {
            "node": {
                "hostnames": {"manage": [args.manage], "storage": [args.storage or args.manage]},
                "zone": args.zone,
            },
            "devices": devices,
        }
        return type_, _validated(models.AddNode, {"cluster": args.cluster, "node": node})
    evacuate = {"evacuate": True} if getattr(args, "evacuate", False) else {}
    if args.command == "node":
        return type_, _validated(models.NodeRef, {"cluster": args.cluster, "host": args.host, **evacuate})
    if action == "add":
        device = {"name": args.name, "backend": args.backend, "capacity": args.capacity}
        return type_, _validated(models.AddDevice, {"cluster": args.cluster, "host": args.host, "device": device})
    return type_, _validated(
        models.DeviceRef, {"cluster": args.cluster, "host": args.host, "name": args.name, **evacuate}
    )


def _provision_data(args: argparse.Namespace) -> models.ProvisionVolume:
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
    return _validated(
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
        },
    )


def _validated(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise ProvisionerError(f"invalid request: {problems}") from e


def _render(event: Event, *, as_json: bool) -> str:
    if as_json:
        return json.dumps({"type": event.type, "id": event.id, "data": event.data.model_dump(mode="json")}, indent=2)
    data = event.data
    match data:
        case models.VolumeProvisioned(volume=volume):
            lines = [
                f"provisioned {volume.name} ({volume.volume_id}) in cluster {volume.cluster}: "
                f"{format_size(volume.size)}, {volume.durability.type}",
                f"  mount: mount -t glusterfs -o backup-volfile-servers={':'.join(volume.backup_servers)} "
                f"{volume.mount} /mnt/{volume.name}",
            ]
            lines += [
                f"  brick {b.host}:{b.path} ({format_size(b.size)}{', arbiter' if b.arbiter else ''})"
                for b in volume.bricks
            ]
            return "\n".join(lines)
        case models.VolumeExpanded(volume=volume, added_bricks=added):
            return f"expanded {volume.name} to {format_size(volume.size)}: {added} brick(s) added, rebalance started"
        case models.VolumeDeleted():
            what = data.name or data.volume_id
            return f"deleted {what}" if data.existed else f"{what}: no such volume (nothing to delete)"
        case models.TopologyLoaded():
            return f"topology of cluster {data.cluster} now: {data.nodes} nodes, {data.devices} devices"
        case models.RequestFailed():
            return f"FAILED ({data.reason}): {data.message}"
    return repr(data)


async def _show_state(settings: Settings, *, cluster: str | None, as_json: bool) -> str:
    state = DesiredState()
    reader = StateTopicReader(settings.kafka, state)
    await reader.start()
    try:
        await reader.catch_up()
    finally:
        await reader.stop()
    clusters = [c for c in state.clusters.values() if cluster in (None, c.id)]
    volumes = sorted((v for v in state.volumes.values() if cluster in (None, v.cluster)), key=lambda v: v.name)
    if as_json:
        return json.dumps(
            {
                "clusters": [dataclasses.asdict(c) for c in clusters],
                "volumes": [dataclasses.asdict(v) for v in volumes],
            },
            indent=2,
            default=str,
        )
    lines = [f"{'CLUSTER':<16} {'NODES':>5} {'DEVICES':>7} {'CAPACITY':>10} {'USED':>10}"]
    for c in clusters:
        devices = [d for n in c.nodes for d in n.devices]
        used = sum(state.usage(c.id).values())
        lines.append(
            f"{c.id:<16} {len(c.nodes):>5} {len(devices):>7} {format_size(sum(d.capacity for d in devices)):>10} "
            f"{format_size(used):>10}"
        )
    lines += ["", f"{'VOLUME':<24} {'CLUSTER':<16} {'STATUS':<9} {'SIZE':>8} {'DURABILITY':<12} {'BRICKS':>6}  ID"]
    for v in volumes:
        lines.append(
            f"{v.name:<24} {v.cluster:<16} {v.status.value:<9} {format_size(v.size):>8} {v.durability.type:<12} "
            f"{len(v.bricks):>6}  {v.id}"
        )
    return "\n".join(lines)


def _render_report(report: reconciler.Report, *, as_json: bool) -> str:
    repaired = {id(d) for d in report.repaired}
    failures = {id(d): why for d, why in report.failed}

    def outcome(drift: Drift) -> str:
        if id(drift) in repaired:
            return "request sent" if drift.kind == "interrupted" else "repaired"
        return f"repair failed: {failures[id(drift)]}" if id(drift) in failures else ""

    if as_json:
        rows = [
            {
                "kind": d.kind,
                "cluster": d.cluster,
                "node": d.node,
                "subject": d.subject,
                "volume_id": d.volume_id,
                "detail": d.detail,
                "repairable": d.repairable,
                "outcome": outcome(d),
            }
            for d in report.drift
        ]
        return json.dumps({"drift": rows, "left": len(report.left)}, indent=2)
    if not report.drift:
        return "no drift: desired state and the nodes agree"
    lines = [f"{'KIND':<15} {'CLUSTER':<16} {'NODE':<15} {'SUBJECT':<34} DETAIL"]
    for d in report.drift:
        done = outcome(d)
        lines.append(
            f"{d.kind:<15} {d.cluster:<16} {d.node or '-':<15} {d.subject:<34} {d.detail}"
            + (f" [{done}]" if done else "")
        )
    lines.append(f"{len(report.drift)} found, {len(report.repaired)} repaired, {len(report.left)} left")
    return "\n".join(lines)


def _export_schemas(directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    files = schemas()
    for name, text in files.items():
        (directory / name).write_text(text)
    (directory / "asyncapi.json").write_text(json.dumps(asyncapi.document(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {len(files)} event schemas and asyncapi.json to {directory}")
    return 0
