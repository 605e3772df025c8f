"""The ``data`` of every event, as frozen pydantic models with ``extra="forbid"``.

Each CloudEvents ``type`` maps to exactly one model (``REQUEST_TYPES`` / ``RESULT_TYPES``), and the
JSON Schemas in ``schemas/`` are generated from these classes. Requests say what is wanted;
results say what happened, exactly once per request.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from provisioner import domain
from provisioner.events.fields import (
    CSI_DRIVER,
    TAG_MATCH_PATTERN,
    AbsolutePath,
    ClusterIdField,
    CsiDriverName,
    HexId,
    HostName,
    KubeName,
    KubeNamespace,
    KubeUid,
    Label,
    MountOption,
    OptionKey,
    OptionValue,
    ProvisionerName,
    SizeBytes,
    VolumeName,
)

MESSAGE_LIMIT = 4096
"""Characters of a human-readable message in a result or progress event (node output is cut to it)."""


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


# --- durability -----------------------------------------------------------------------------------


class DistributeSpec(Model):
    """No redundancy."""

    type: Literal["none"] = "none"

    def to_domain(self) -> domain.Durability:
        return domain.Distribute()


class ReplicateSpec(Model):
    """Full copies on different nodes; ``arbiter`` makes the last brick of each set metadata-only."""

    type: Literal["replicate"] = "replicate"
    replica: Annotated[int, Field(ge=2, le=6)] = 3
    arbiter: bool = False

    @model_validator(mode="after")
    def _arbiter_needs_three(self) -> ReplicateSpec:
        if self.arbiter and self.replica != 3:
            raise ValueError("arbiter volumes are replica 3 (two data bricks and one arbiter)")
        return self

    def to_domain(self) -> domain.Durability:
        return domain.Replicate(replica=self.replica, arbiter=self.arbiter)


class DisperseSpec(Model):
    """Erasure coding: ``data`` + ``redundancy`` bricks per set, any ``redundancy`` may fail."""

    type: Literal["disperse"] = "disperse"
    data: Annotated[int, Field(ge=2, le=16)] = 2
    redundancy: Annotated[int, Field(ge=1, le=8)] = 1

    @model_validator(mode="after")
    def _redundancy_below_data(self) -> DisperseSpec:
        if self.redundancy * 2 > self.data + self.redundancy - 1:
            raise ValueError("redundancy must be less than half of data + redundancy")
        return self

    def to_domain(self) -> domain.Durability:
        return domain.Disperse(data=self.data, redundancy=self.redundancy)


DurabilitySpec = Annotated[DistributeSpec | ReplicateSpec | DisperseSpec, Field(discriminator="type")]


def durability_spec(durability: domain.Durability) -> DistributeSpec | ReplicateSpec | DisperseSpec:
    match durability:
        case domain.Distribute():
            return DistributeSpec()
        case domain.Replicate(replica=replica, arbiter=arbiter):
            return ReplicateSpec(replica=replica, arbiter=arbiter)
        case domain.Disperse(data=data, redundancy=redundancy):
            return DisperseSpec(data=data, redundancy=redundancy)


# --- Kubernetes ---------------------------------------------------------------------------------------


class ClaimRef(Model):
    """A PersistentVolumeClaim; the uid tells a claim from a later one of the same name."""

    namespace: KubeNamespace
    name: KubeName
    uid: KubeUid


class ClaimVolume(Model):
    """How the PersistentVolume for a claim should look (from the claim and its StorageClass).

    The daemon creates it, with the per-claim Endpoints and headless Service, once the gluster volume
    is started; the PV binder of Kubernetes then binds it to the claim."""

    claim: ClaimRef
    storage_class: KubeName
    provisioner: ProvisionerName = Field(description="Written to pv.kubernetes.io/provisioned-by.")
    access_modes: Annotated[
        list[Literal["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]],
        Field(min_length=1, max_length=4),
    ] = ["ReadWriteOnce"]
    reclaim_policy: Literal["Delete", "Retain"] = "Delete"
    mount_options: Annotated[list[MountOption], Field(max_length=32)] = []
    source: Literal["glusterfs", "csi"] = Field(
        "csi",
        description="PV source: the project's CSI driver (any Kubernetes), or the in-tree glusterfs source "
        "(only kubelets up to Kubernetes 1.25 have it).",
    )
    csi_driver: CsiDriverName = Field(
        CSI_DRIVER, description="The CSI driver of a csi source (the CSIDriver object's name)."
    )


class ClaimObjects(Model):
    """The Kubernetes objects of a provisioned claim, removed after its storage is gone."""

    persistent_volume: KubeName
    namespace: KubeNamespace = Field(description="Namespace of the Endpoints and Service.")
    service: KubeName = Field(description="Name of the Endpoints and the headless Service.")


class ClaimResize(Model):
    """The claim whose PersistentVolume follows an expansion."""

    persistent_volume: KubeName
    claim: ClaimRef


# --- requests ---------------------------------------------------------------------------------------


class ProvisionVolume(Model):
    """Create a volume. ``volume_id`` defaults to an id derived from the request id, so a
    redelivered request always names the same volume."""

    cluster: ClusterIdField
    size: SizeBytes
    durability: DurabilitySpec = ReplicateSpec()
    volume_id: HexId | None = None
    name: VolumeName | None = None
    gid: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None
    options: Annotated[dict[OptionKey, OptionValue], Field(max_length=64)] = {}
    zone_checking: Literal["strict", "none"] = "none"
    labels: Annotated[dict[Label, Label], Field(max_length=32)] = {}
    snapshot_factor: Annotated[float, Field(ge=1.0, le=100.0)] = Field(
        1.0, description="LVM thin pool = brick size x this factor, room for snapshots (Heketi's snapfactor)."
    )
    device_tag_match: Annotated[str, Field(pattern=TAG_MATCH_PATTERN)] | None = Field(
        None,
        description="Heketi's user.heketi.device-tag-match: key=value puts every brick (now and on expand or "
        "evacuation) on devices tagged so; key!=value on devices that are not.",
    )
    kubernetes: ClaimVolume | None = Field(None, description="Also create the claim's PV, Endpoints and Service.")


class DeleteVolume(Model):
    """Delete a volume and destroy its bricks; deleting a volume that is already gone succeeds."""

    cluster: ClusterIdField
    volume_id: HexId | None = None
    name: VolumeName | None = None
    kubernetes: ClaimObjects | None = Field(None, description="Remove these once the storage is gone.")

    @model_validator(mode="after")
    def _one_selector(self) -> DeleteVolume:
        if (self.volume_id is None) == (self.name is None):
            raise ValueError("give exactly one of volume_id or name")
        return self


class ExpandVolume(Model):
    """Grow a volume to ``size`` bytes by adding whole brick sets (then rebalancing).

    A size at or below the current one changes nothing and succeeds, so a redelivered or repeated
    request is harmless."""

    cluster: ClusterIdField
    size: SizeBytes
    volume_id: HexId | None = None
    name: VolumeName | None = None
    kubernetes: ClaimResize | None = Field(None, description="Set this PV's and claim's capacity afterwards.")

    @model_validator(mode="after")
    def _one_selector(self) -> ExpandVolume:
        if (self.volume_id is None) == (self.name is None):
            raise ValueError("give exactly one of volume_id or name")
        return self


def _arbiter_tag(tags: dict[str, str]) -> dict[str, str]:
    """Heketi's ``arbiter`` tag takes one of three values; anything else would be silently ignored."""
    if "arbiter" in tags and tags["arbiter"] not in ("supported", "required", "disabled"):
        raise ValueError(f"tag arbiter={tags['arbiter']!r}: use supported, required or disabled")
    return tags


class CreateSnapshot(Model):
    """Take a crash-consistent snapshot of a volume (``gluster snapshot create``: every brick must be a
    thin LV, so on lvm devices). ``snapshot_id`` defaults to an id derived from the request id."""

    cluster: ClusterIdField
    volume_id: HexId | None = None
    volume: VolumeName | None = Field(None, description="The volume's name (or give volume_id).")
    snapshot_id: HexId | None = None
    name: VolumeName | None = Field(None, description="The snapshot's name in the pool (default snap_<id>).")

    @model_validator(mode="after")
    def _one_volume(self) -> CreateSnapshot:
        if (self.volume_id is None) == (self.volume is None):
            raise ValueError("give exactly one of volume_id or volume")
        return self


class DeleteSnapshot(Model):
    """Delete a snapshot; deleting one that is already gone succeeds."""

    cluster: ClusterIdField
    snapshot_id: HexId | None = None
    name: VolumeName | None = None

    @model_validator(mode="after")
    def _one_selector(self) -> DeleteSnapshot:
        if (self.snapshot_id is None) == (self.name is None):
            raise ValueError("give exactly one of snapshot_id or name")
        return self


class ListSnapshots(Model):
    """The snapshots of a cluster, or of one of its volumes."""

    cluster: ClusterIdField
    volume_id: HexId | None = None
    volume: VolumeName | None = None

    @model_validator(mode="after")
    def _at_most_one(self) -> ListSnapshots:
        if self.volume_id is not None and self.volume is not None:
            raise ValueError("give at most one of volume_id or volume")
        return self


class CloneVolume(Model):
    """A new volume of ours (its own ids) with the data of a snapshot, or of a volume as it is now.
    Its bricks are thin snapshots in the pools of the source's bricks, so a clone takes no space
    until it is written; ``volume_id`` defaults to an id derived from the request id."""

    cluster: ClusterIdField
    volume_id: HexId | None = None
    name: VolumeName | None = None
    from_snapshot_id: HexId | None = None
    from_snapshot: VolumeName | None = Field(None, description="A snapshot's name.")
    from_volume_id: HexId | None = None
    from_volume: VolumeName | None = Field(None, description="A volume's name: a snapshot is taken, then dropped.")
    gid: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> CloneVolume:
        given = [f for f in (self.from_snapshot_id, self.from_snapshot, self.from_volume_id, self.from_volume) if f]
        if len(given) != 1:
            raise ValueError("give exactly one of from_snapshot_id, from_snapshot, from_volume_id or from_volume")
        return self


class TopologyDevice(Model):
    """A Heketi device entry, plus our ``backend`` and ``capacity`` (required for file devices)."""

    name: AbsolutePath
    destroydata: bool = False
    enabled: bool = True
    backend: Literal["lvm", "file"] = "lvm"
    capacity: SizeBytes | None = None
    tags: Annotated[dict[Label, Label], Field(max_length=32), AfterValidator(_arbiter_tag)] = {}

    @model_validator(mode="after")
    def _file_needs_capacity(self) -> TopologyDevice:
        if self.backend == "file" and self.capacity is None:
            raise ValueError(f"device {self.name}: a file-backend device needs a capacity in bytes")
        return self


class TopologyHostnames(Model):
    """Heketi's hostnames. The first manage hostname is where SSH goes, the others are tried in order
    when it cannot be reached; the first storage hostname names the bricks, the others are given to
    clients as more volfile servers."""

    manage: Annotated[list[HostName], Field(min_length=1, max_length=8)]
    storage: Annotated[list[HostName], Field(min_length=1, max_length=8)]

    @model_validator(mode="after")
    def _each_once(self) -> TopologyHostnames:
        for kind, names in (("manage", self.manage), ("storage", self.storage)):
            if len(set(names)) != len(names):
                raise ValueError(f"{kind} lists a hostname twice")
        return self


class TopologyNodeInfo(Model):
    hostnames: TopologyHostnames
    zone: Annotated[int, Field(ge=0, le=1_000_000)] = 1
    enabled: bool = True
    tags: Annotated[dict[Label, Label], Field(max_length=32), AfterValidator(_arbiter_tag)] = {}


class TopologyNode(Model):
    node: TopologyNodeInfo
    devices: Annotated[list[TopologyDevice], Field(max_length=256)] = []


class LoadTopology(Model):
    """Declare one cluster's nodes and devices (Heketi's topology.json cluster entry)."""

    cluster: ClusterIdField
    nodes: Annotated[list[TopologyNode], Field(max_length=10_000)]
    brick_root: AbsolutePath = "/var/lib/provisioner/mounts"

    @model_validator(mode="after")
    def _unique(self) -> LoadTopology:
        manage = [name for n in self.nodes for name in n.node.hostnames.manage]
        if len(set(manage)) != len(manage):
            raise ValueError("two nodes share a manage hostname")
        for entry in self.nodes:
            names = [d.name for d in entry.devices]
            if len(set(names)) != len(names):
                raise ValueError(f"node {entry.node.hostnames.manage[0]} lists a device twice")
        return self


class AddNode(Model):
    """Add a storage node (peer-probed into the trusted pool from a node already in the cluster)."""

    cluster: ClusterIdField
    node: TopologyNode


class NodeRef(Model):
    """Names a node by its manage hostname: remove (refused while it holds bricks, unless evacuate), enable, disable."""

    cluster: ClusterIdField
    host: HostName
    evacuate: bool = Field(False, description="For remove only: move every brick off first.")


class AddDevice(Model):
    cluster: ClusterIdField
    host: HostName
    device: TopologyDevice


class DeviceRef(Model):
    """Names a device of a node: remove (refused while it holds bricks, unless evacuate), enable,
    disable, or resync (its capacity read again from the node, after the disk grew)."""

    cluster: ClusterIdField
    host: HostName
    name: AbsolutePath
    evacuate: bool = Field(False, description="For remove only: move every brick off first.")
