"""The command line of ``provisioner``: subcommands, flags and their help, with examples."""

from __future__ import annotations

import argparse
from pathlib import Path

from provisioner import __version__
from provisioner.units import parse_size

EXAMPLES = """\
examples:
  provisioner run                                   # the daemon
  provisioner watch                                 # claims of our StorageClasses -> requests
  provisioner topology load topology.json --cluster dev --wait
  provisioner request provision --cluster dev --size 1GiB --replica 3 --wait
  provisioner request provision --cluster dev --size 10GiB --disperse 2+1 --name media --wait
  provisioner request expand --cluster dev --name media --size 20GiB --wait
  provisioner request delete --cluster dev --name media --wait
  provisioner snapshot create --cluster dev --volume media --name media_monday --wait
  provisioner request clone --cluster dev --from-snapshot media_monday --name media_copy --wait
  provisioner reconcile --cluster dev              # drift between desired state and the nodes
  provisioner reconcile --cluster dev --repair     # ... and remove orphans
  provisioner schemas export schemas/

settings (environment, or KEY=VALUE lines in --env-file):
  PROVISIONER_KAFKA__BOOTSTRAP=host:9092   PROVISIONER_SSH__KEY_FILE=/path/id_ed25519
  PROVISIONER_SSH__KNOWN_HOSTS=/path/known_hosts   PROVISIONER_HTTP__PORT=9464   (see README)
  PROVISIONER_KUBERNETES__ENABLED=true   PROVISIONER_KUBERNETES__KUBECONFIG=/path/kubeconfig (unset in a pod)
"""


def build_parser() -> argparse.ArgumentParser:
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

    csi = commands.add_parser(
        "csi",
        help="run the CSI node plugin (mounts gluster volumes into pods)",
        description="The CSI node plugin: see `provisioner csi --help` for its flags (PROVISIONER_CSI__*).",
        add_help=False,
    )
    csi.add_argument("csi_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    request = commands.add_parser("request", help="publish a volume request").add_subparsers(
        dest="request", required=True, metavar="REQUEST"
    )
    provision = request.add_parser("provision", help="create a volume")
    provision.add_argument("--cluster", required=True, help="cluster id (the Kafka key)")
    provision.add_argument("--size", required=True, type=size, help="e.g. 1GiB, 500Mi, 10G")
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
    provision.add_argument(
        "--device-tag-match", metavar="KEY=VALUE", help="only devices tagged so (or KEY!=VALUE: not so), e.g. disk=ssd"
    )
    _wait_flags(provision)

    expand = request.add_parser("expand", help="grow a volume by whole brick sets")
    expand.add_argument("--cluster", required=True)
    expand.add_argument("--size", required=True, type=size, help="the new total size, e.g. 2GiB")
    grow_target = expand.add_mutually_exclusive_group(required=True)
    grow_target.add_argument("--volume-id")
    grow_target.add_argument("--name")
    _wait_flags(expand)

    clone = request.add_parser("clone", help="a new volume with the data of a snapshot or of a volume")
    clone.add_argument("--cluster", required=True)
    clone.add_argument("--name", help="the clone's name (default vol_<id>)")
    clone.add_argument("--volume-id", help="the clone's id (default derived from the request)")
    clone.add_argument("--gid", type=int, help="group owning the brick roots (default: the origin's)")
    origin = clone.add_mutually_exclusive_group(required=True)
    origin.add_argument("--from-snapshot", metavar="NAME")
    origin.add_argument("--from-snapshot-id", metavar="ID")
    origin.add_argument(
        "--from-volume", metavar="NAME", help="a volume as it is now (a snapshot is taken, then dropped)"
    )
    origin.add_argument("--from-volume-id", metavar="ID")
    _wait_flags(clone)

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
        ("resync", "read a device's size again after its disk grew"),
    ):
        dev = device.add_parser(action, help=text)
        dev.add_argument("--cluster", required=True)
        dev.add_argument("--host", required=True, help="the node's manage hostname")
        dev.add_argument("--name", required=True, help="device path (a directory for the file backend)")
        if action == "add":
            dev.add_argument("--capacity", type=size, help="bytes for bricks (file backend), e.g. 100GiB")
            dev.add_argument("--backend", choices=["file", "lvm"], default="file")
            dev.add_argument(
                "--destroydata", action="store_true", help="wipe what the disk holds first (lvm); its data is lost"
            )
        if action == "remove":
            _evacuate_flag(dev, "device")
        _wait_flags(dev)

    snapshot = commands.add_parser(
        "snapshot", help="create, delete or list snapshots (volumes on lvm devices)"
    ).add_subparsers(dest="snapshot", required=True, metavar="ACTION")
    snap_create = snapshot.add_parser("create", help="a crash-consistent snapshot of a volume (gluster snapshot)")
    snap_create.add_argument("--cluster", required=True)
    of = snap_create.add_mutually_exclusive_group(required=True)
    of.add_argument("--volume", metavar="NAME")
    of.add_argument("--volume-id", metavar="ID")
    snap_create.add_argument("--name", help="the snapshot's name (default snap_<id>)")
    _wait_flags(snap_create)
    snap_delete = snapshot.add_parser("delete", help="delete a snapshot")
    snap_delete.add_argument("--cluster", required=True)
    which = snap_delete.add_mutually_exclusive_group(required=True)
    which.add_argument("--name")
    which.add_argument("--snapshot-id", metavar="ID")
    _wait_flags(snap_delete)
    snap_list = snapshot.add_parser("list", help="the snapshots of a cluster or of one volume")
    snap_list.add_argument("--cluster", required=True)
    of_volume = snap_list.add_mutually_exclusive_group()
    of_volume.add_argument("--volume", metavar="NAME")
    of_volume.add_argument("--volume-id", metavar="ID")
    _wait_flags(snap_list)

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
            "count. A node that cannot be read is named (NOT JUDGED) and nothing about it is judged. Exit 0 when "
            "every node was read and no drift is left, 1 otherwise."
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


def size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
