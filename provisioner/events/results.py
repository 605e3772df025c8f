"""The ``data`` of result and progress events: what became of a request, exactly once per request.

A success carries what the requester needs to use what it asked for (a volume's bricks, mount
source and backup volfile servers); every failure has the one shape ``RequestFailed``, with a stable
reason code (``provisioner.errors.REASONS``) and a bounded message.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from provisioner.events.fields import AbsolutePath, ClusterIdField, HexId, HostName, KubeName, VolumeName
from provisioner.events.models import MESSAGE_LIMIT, DurabilitySpec, Model


class BrickOut(Model):
    id: HexId
    node: HexId
    host: HostName
    path: AbsolutePath
    device: HexId
    size: int
    arbiter: bool = False


class VolumeOut(Model):
    cluster: ClusterIdField
    volume_id: HexId
    name: VolumeName
    size: int
    durability: DurabilitySpec
    bricks: list[BrickOut]
    mount: str = Field(description="FUSE mount source, host:/volume.")
    backup_servers: list[HostName] = Field(description="For the mount option backup-volfile-servers.")
    gid: int | None = None


class VolumeProvisioned(Model):
    request_id: str
    volume: VolumeOut
    persistent_volume: KubeName | None = Field(None, description="The claim's PV, when the request named a claim.")


class VolumeExpanded(Model):
    request_id: str
    volume: VolumeOut
    added_bricks: int
    persistent_volume: KubeName | None = Field(None, description="The PV whose capacity followed, if any.")


class VolumeDeleted(Model):
    request_id: str
    cluster: ClusterIdField
    volume_id: HexId | None
    name: VolumeName | None
    existed: bool
    persistent_volume: KubeName | None = Field(None, description="The PV removed with it, if any.")


class SnapshotOut(Model):
    snapshot_id: HexId
    name: VolumeName
    cluster: ClusterIdField
    volume_id: HexId
    volume: VolumeName = Field(description="The name of the volume it was taken of.")


class SnapshotCreated(Model):
    request_id: str
    snapshot: SnapshotOut


class SnapshotDeleted(Model):
    request_id: str
    cluster: ClusterIdField
    snapshot_id: HexId | None
    name: VolumeName | None
    existed: bool


class SnapshotsListed(Model):
    request_id: str
    cluster: ClusterIdField
    snapshots: Annotated[list[SnapshotOut], Field(max_length=10_000)]


class VolumeCloned(Model):
    request_id: str
    volume: VolumeOut
    from_snapshot: VolumeName = Field(description="The gluster snapshot the clone's bricks were made from.")
    from_volume_id: HexId


class TopologyLoaded(Model):
    request_id: str
    cluster: ClusterIdField
    nodes: int
    devices: int


class RequestFailed(Model):
    """The one shape of every ``…failed`` event: a stable ``reason`` code and a human ``message``."""

    request_id: str
    cluster: str | None = None
    volume_id: str | None = None
    reason: Annotated[str, Field(pattern=r"^[A-Za-z]{1,64}$")]
    message: Annotated[str, Field(max_length=MESSAGE_LIMIT)]
    retriable: bool = False


class Progress(Model):
    """A step of a long request finished; not a result (the terminal ``…succeeded``/``…failed`` is)."""

    request_id: str
    cluster: ClusterIdField
    volume_id: HexId | None = None
    step: Annotated[str, Field(pattern=r"^[a-z_]{1,32}$")]
    message: Annotated[str, Field(max_length=MESSAGE_LIMIT)]
