"""Drift between desired state (the state topic) and what the nodes hold (pure).

The nodes describe themselves: every gluster volume we make carries ``user.provisioner.id`` and
``user.provisioner.owner``, every brick image (or LV) our volume id and owner. So a thing on a node
is *ours* only when it carries our owner tag (the deployment's state topic); other deployments
sharing the nodes, and anything made by hand, are never reported or touched.

Kinds (``metrics.DRIFT_KINDS``):

- ``orphan_volume``: a gluster volume of ours that desired state does not know; repair deletes it.
- ``orphan_brick``: a brick of ours on a node that no desired volume names; repair destroys it.
- ``missing_volume`` / ``missing_brick``: an online volume (or its brick) that the nodes lack;
  reported, never invented back.
- ``missing_device``: an lvm device whose volume group its node does not have (the disk is gone,
  or not found at boot), named with every brick of a volume record it held.
- ``interrupted``: a volume record stuck in creating / expanding / deleting; a redelivered request
  normally finishes it, so only a stale one (no progress for a while) is repaired, by sending the
  request that finishes or rolls it back. Unfinished brick moves (evacuation) are reported too; the
  repeated remove request finishes them.

Ordering makes orphans exact: the daemon records intent before any node work, and the inventory is
taken *before* desired state is read, so whatever the nodes show was already recorded if it is ours.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from provisioner.domain import BrickId, Cluster, DeviceId, DeviceSpace, Volume, VolumeId, VolumeStatus
from provisioner.storage import tags
from provisioner.storage.parsing import VolumeInfo

IMAGE_NAME = re.compile(r"/brick_([0-9a-f]{32})\.img$")
MOUNT_NAME = re.compile(r"/vg_([0-9a-f]{32})/brick_([0-9a-f]{32})$")


@dataclass(frozen=True, slots=True)
class NodeBrick:
    """A brick as a node shows it: its image or LV (with our tags) and whether it is mounted."""

    host: str
    device: DeviceId
    brick: BrickId
    volume: str | None  # the volume id it is tagged with
    owner: str | None
    stored: bool  # the image or LV exists
    mounted: bool


@dataclass(frozen=True, slots=True)
class Inventory:
    """What one cluster's nodes hold. Unreachable hosts are listed and nothing about them is judged."""

    volumes: tuple[VolumeInfo, ...] | None  # None: no node answered ``gluster volume info``
    bricks: tuple[NodeBrick, ...]
    unreachable: tuple[str, ...] = ()
    space: tuple[DeviceSpace, ...] = ()
    missing_devices: tuple[DeviceId, ...] = ()  # lvm devices whose VG their (reachable) node lacks


@dataclass(frozen=True, slots=True)
class Drift:
    kind: str
    cluster: str
    subject: str  # a volume name or a brick id
    detail: str
    node: str | None = None
    volume_id: str | None = None
    repairable: bool = False
    brick: NodeBrick | None = None


def find_drift(
    cluster: Cluster,
    desired: Iterable[Volume],
    inventory: Inventory,
    owner: str,
    *,
    stale: Callable[[Volume], bool] = lambda _: False,
) -> list[Drift]:
    """Every difference for one cluster, in a stable order (kind, subject).

    ``desired`` is every volume the deployment knows, of every cluster: a thing of ours on the
    nodes is an orphan only when *no* record names it. Clusters may share nodes (a pool carved
    into several clusters, or the dev stack's), so one cluster's nodes show another's volumes, and
    judging them against this cluster's records alone would delete a live volume."""
    known = {v.id: v for v in desired}
    volumes = [v for v in known.values() if v.cluster == cluster.id]
    found: list[Drift] = []
    hosts = {n.id: n.manage for n in cluster.nodes}
    down = set(inventory.unreachable)

    if inventory.volumes is not None:
        actual = {info.name: info for info in inventory.volumes}
        for info in inventory.volumes:
            if tags.is_ours(info.options, owner) and info.options[tags.ID_OPTION] not in known:
                found.append(
                    Drift(
                        "orphan_volume",
                        cluster.id,
                        info.name,
                        f"gluster volume {info.name} ({info.status}) carries our id "
                        f"{info.options[tags.ID_OPTION]} but no volume record names it",
                        volume_id=info.options[tags.ID_OPTION],
                        repairable=True,
                    )
                )
        for volume in volumes:
            if volume.status is VolumeStatus.ONLINE and volume.name not in actual:
                found.append(
                    Drift(
                        "missing_volume",
                        cluster.id,
                        volume.name,
                        f"volume {volume.name} is online in desired state but gluster has no such volume",
                        volume_id=volume.id,
                    )
                )

    for device_id in inventory.missing_devices:
        node, device = cluster.device(device_id)
        held = [f"{b.id} of {v.name}" for v in volumes for b in v.bricks if b.device == device_id]
        found.append(
            Drift(
                "missing_device",
                cluster.id,
                device.name,
                f"device {device.name} on {node.manage} is missing (no volume group vg_{device_id}); "
                + (f"it held {len(held)} brick(s): {', '.join(held)}" if held else "it held no brick"),
                node=node.manage,
            )
        )

    on_nodes = {(b.device, b.brick): b for b in inventory.bricks}
    for volume in volumes:
        if volume.status is not VolumeStatus.ONLINE or volume.replacing:
            continue  # reported as interrupted below; its bricks are in flux
        for brick in volume.bricks:
            host = hosts.get(brick.node, "?")
            if host in down:
                continue
            seen = on_nodes.get((brick.device, brick.id))
            if seen is None or not (seen.stored and seen.mounted):
                what = "absent" if seen is None else ("not mounted" if seen.stored else "its storage is gone")
                found.append(
                    Drift(
                        "missing_brick",
                        cluster.id,
                        brick.id,
                        f"brick {brick.id} of volume {volume.name} on {host}: {what}",
                        node=host,
                        volume_id=volume.id,
                    )
                )

    for seen in inventory.bricks:
        if seen.owner != owner:
            continue
        record = known.get(VolumeId(seen.volume or ""))
        if record is not None and any(b.id == seen.brick for b in record.bricks):
            continue  # by id alone: on shared nodes one directory is a device of each cluster
        why = "no volume record names it" if record is None else f"volume {record.name} has no such brick"
        found.append(
            Drift(
                "orphan_brick",
                cluster.id,
                seen.brick,
                f"brick {seen.brick} on {seen.host} (device {seen.device}) carries our volume id "
                f"{seen.volume}, but {why}",
                node=seen.host,
                volume_id=seen.volume,
                repairable=True,
                brick=seen,
            )
        )

    for volume in volumes:
        if volume.status is VolumeStatus.ONLINE and volume.replacing:
            found.append(
                Drift(
                    "interrupted",
                    cluster.id,
                    volume.name,
                    f"volume {volume.name} has {len(volume.replacing)} unfinished brick move(s); repeat the "
                    "node or device remove with --evacuate to finish them",
                    volume_id=volume.id,
                )
            )
        elif volume.status is not VolumeStatus.ONLINE:
            found.append(
                Drift(
                    "interrupted",
                    cluster.id,
                    volume.name,
                    f"volume {volume.name} is still {volume.status.value}"
                    + (" with no progress for a while" if stale(volume) else " (its request may still be running)"),
                    volume_id=volume.id,
                    repairable=stale(volume),
                )
            )
    return sorted(found, key=lambda d: (d.kind, d.subject))


def bricks_from_images(
    host: str, images: dict[str, dict[str, str]], device_of_dir: dict[str, DeviceId]
) -> list[NodeBrick]:
    """File bricks from ``getfattr -d`` dumps of ``<device dir>/brick_<id>.img``."""
    bricks = []
    for path, attrs in images.items():
        match = IMAGE_NAME.search(path)
        device = device_of_dir.get(path.rsplit("/", 1)[0])
        if match is not None and device is not None:
            bricks.append(
                NodeBrick(
                    host=host,
                    device=device,
                    brick=BrickId(match.group(1)),
                    volume=attrs.get(tags.IMAGE_VOLUME_XATTR),
                    owner=attrs.get(tags.IMAGE_OWNER_XATTR),
                    stored=True,
                    mounted=False,
                )
            )
    return bricks


def bricks_from_lvs(host: str, lvs: Sequence[tuple[str, str, dict[str, str]]], devices: set[str]) -> list[NodeBrick]:
    """LVM bricks: thin LVs ``brick_<id>`` in ``vg_<device id>`` with our ``provisioner.*`` tags."""
    bricks = []
    for vg, lv, marks in lvs:
        device, brick = vg.removeprefix("vg_"), lv.removeprefix("brick_")
        if device in devices and lv.startswith("brick_") and tags.LV_VOLUME_TAG in marks:
            bricks.append(
                NodeBrick(
                    host=host,
                    device=DeviceId(device),
                    brick=BrickId(brick),
                    volume=marks[tags.LV_VOLUME_TAG],
                    owner=marks.get(tags.LV_OWNER_TAG),
                    stored=True,
                    mounted=False,
                )
            )
    return bricks


def with_mounts(
    host: str, stored: Sequence[NodeBrick], mounts: Sequence[tuple[str, str]], brick_root: str, devices: set[str]
) -> list[NodeBrick]:
    """Mark the stored bricks that are mounted at their place under ``brick_root``; a brick mount
    whose storage is gone is kept too (owner unknown: it is reported only through its volume)."""
    bricks = {(b.device, b.brick): b for b in stored}
    for target, _ in mounts:
        match = MOUNT_NAME.search(target)
        if match is None or not target.startswith(brick_root.rstrip("/") + "/") or match.group(1) not in devices:
            continue
        key = (DeviceId(match.group(1)), BrickId(match.group(2)))
        if key in bricks:
            bricks[key] = dataclasses.replace(bricks[key], mounted=True)
        else:
            bricks[key] = NodeBrick(host, DeviceId(key[0]), BrickId(key[1]), None, None, stored=False, mounted=True)
    return list(bricks.values())
