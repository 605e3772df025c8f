"""The provisioner's nouns: clusters, nodes, devices, bricks and volumes, as frozen values.

These are the in-memory desired state and the contents of state records. They hold no behaviour
beyond what can be derived from their own fields, and they never talk to the outside world.
Ids are 32-hex strings (Heketi's convention), derived deterministically where the same input must
map to the same object (a re-loaded topology, a redelivered request).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, NewType

ClusterId = NewType("ClusterId", str)
NodeId = NewType("NodeId", str)
DeviceId = NewType("DeviceId", str)
BrickId = NewType("BrickId", str)
VolumeId = NewType("VolumeId", str)
SnapshotId = NewType("SnapshotId", str)
RequestId = NewType("RequestId", str)

# Namespace for ids derived from names; fixed forever so that ids stay stable across versions.
_ID_NAMESPACE = uuid.UUID("6f1c1e36-7a51-4be4-9c7e-3f1d1f0c2a10")


def derive_id(*parts: str) -> str:
    """A stable 32-hex id for the given parts (uuid5)."""
    return uuid.uuid5(_ID_NAMESPACE, "/".join(parts)).hex


def new_id() -> str:
    return uuid.uuid4().hex


class BrickBackend(StrEnum):
    """How a device turns into brick filesystems."""

    FILE = "file"  # sparse image per brick, XFS, loop mount: needs no device-mapper
    LVM = "lvm"  # Heketi's layout: thin pool + thin LV per brick


@dataclass(frozen=True, slots=True)
class Distribute:
    """No redundancy: every brick is its own set."""

    type: Literal["none"] = "none"

    @property
    def set_size(self) -> int:
        return 1

    @property
    def data_bricks(self) -> int:
        return 1


@dataclass(frozen=True, slots=True)
class Replicate:
    """``replica`` full copies; with ``arbiter`` the last brick of each set holds metadata only."""

    type: Literal["replicate"] = "replicate"
    replica: int = 3
    arbiter: bool = False

    @property
    def set_size(self) -> int:
        return self.replica

    @property
    def data_bricks(self) -> int:
        return 1


@dataclass(frozen=True, slots=True)
class Disperse:
    """Erasure coding: ``data`` fragments plus ``redundancy`` parity fragments per set."""

    type: Literal["disperse"] = "disperse"
    data: int = 2
    redundancy: int = 1

    @property
    def set_size(self) -> int:
        return self.data + self.redundancy

    @property
    def data_bricks(self) -> int:
        return self.data


Durability = Distribute | Replicate | Disperse


Tags = tuple[tuple[str, str], ...]
"""Heketi's node and device tags, sorted by key: placement matches on them (``planning.tags``)."""


@dataclass(frozen=True, slots=True)
class Device:
    id: DeviceId
    name: str  # block device path (lvm) or directory holding brick images (file)
    capacity: int  # bytes usable for bricks
    backend: BrickBackend = BrickBackend.FILE
    enabled: bool = True
    tags: Tags = ()  # its own; a node's tags apply to its devices unless a device tag of the key overrides


@dataclass(frozen=True, slots=True)
class DeviceSpace:
    """A device's room as its node reports it (statfs of a file device's filesystem, or its VG)."""

    device: DeviceId
    size: int
    free: int


@dataclass(frozen=True, slots=True)
class Node:
    id: NodeId
    manage: str  # where SSH goes
    storage: str  # what gluster brick paths and clients use
    zone: int = 1
    devices: tuple[Device, ...] = ()
    enabled: bool = True
    tags: Tags = ()
    manage_alternates: tuple[str, ...] = ()  # more hostnames SSH tries, in order, when ``manage`` is unreachable
    storage_alternates: tuple[str, ...] = ()  # more hostnames of the node's glusterd, for clients' volfile fetch


@dataclass(frozen=True, slots=True)
class Cluster:
    id: ClusterId
    nodes: tuple[Node, ...] = ()
    brick_root: str = "/var/lib/provisioner/mounts"

    def node(self, node_id: NodeId) -> Node:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    def device(self, device_id: DeviceId) -> tuple[Node, Device]:
        for node in self.nodes:
            for device in node.devices:
                if device.id == device_id:
                    return node, device
        raise KeyError(device_id)


@dataclass(frozen=True, slots=True)
class Brick:
    """One brick of a volume; everything needed to create or destroy it on its node."""

    id: BrickId
    node: NodeId
    device: DeviceId
    size: int
    set_index: int
    arbiter: bool = False
    pool: BrickId | None = None  # a clone's brick lives in the thin pool of the brick it was cloned from

    @property
    def pool_brick(self) -> BrickId:
        """The brick whose thin pool (``tp_<id>``) holds this brick's LV."""
        return self.pool or self.id

    @property
    def footprint(self) -> int:
        """Bytes it takes from its device: none for a clone, whose LV shares its origin's pool."""
        return self.size if self.pool is None else 0


@dataclass(frozen=True, slots=True)
class Replacement:
    """A brick move in progress (evacuation): ``new`` takes the place of ``old`` in its set.

    While a volume lists one, both bricks are in its ``bricks``, so both stay owned (and their
    space counted) until gluster has swapped them and the old brick is destroyed."""

    old: BrickId
    new: BrickId


class VolumeStatus(StrEnum):
    CREATING = "creating"  # intent recorded; node work may be partly done
    ONLINE = "online"
    EXPANDING = "expanding"  # new bricks recorded; add-brick and rebalance may be partly done
    DELETING = "deleting"


@dataclass(frozen=True, slots=True)
class Volume:
    id: VolumeId
    name: str
    cluster: ClusterId
    size: int
    durability: Durability
    bricks: tuple[Brick, ...]
    status: VolumeStatus = VolumeStatus.ONLINE
    gid: int | None = None
    options: tuple[tuple[str, str], ...] = ()
    request: RequestId | None = None
    labels: tuple[tuple[str, str], ...] = field(default=())
    snapshot_factor: float = 1.0  # thin pool size over brick size, for the lvm backend
    replacing: tuple[Replacement, ...] = ()  # brick moves recorded but not finished (absent in older records)
    device_tag_match: str | None = None  # Heketi's ``key=value`` / ``key!=value``: where its bricks may go
    clone: CloneSource | None = None  # for a clone: the gluster snapshot its bricks are made from


@dataclass(frozen=True, slots=True)
class CloneSource:
    """Where a clone's bricks come from: thin snapshots of the LVs of gluster snapshot ``snapshot``.
    A clone of a volume (not of a snapshot) takes a ``temporary`` snapshot first and deletes it after."""

    snapshot: str
    origin: VolumeId
    temporary: bool = False


class SnapshotStatus(StrEnum):
    CREATING = "creating"  # intent recorded; the gluster snapshot may exist
    ONLINE = "online"
    DELETING = "deleting"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A gluster snapshot of one of our volumes (every brick a thin LV), named ``name`` in the pool."""

    id: SnapshotId
    name: str
    cluster: ClusterId
    volume: VolumeId
    status: SnapshotStatus = SnapshotStatus.ONLINE
    request: RequestId | None = None


def snapshot_name_for(snapshot: SnapshotId) -> str:
    return f"snap_{snapshot}"


def brick_mount_point(brick_root: str, device: DeviceId, brick: BrickId) -> str:
    """Heketi's layout: ``<root>/vg_<device>/brick_<brick>``; the brick path is ``<mount>/brick``."""
    return f"{brick_root}/vg_{device}/brick_{brick}"


def volume_name_for(volume: VolumeId) -> str:
    return f"vol_{volume}"
