"""Every CloudEvents ``type`` of the provisioner and the model of its ``data``.

Types are versioned names (``org.gluster.volume.provision.requested.v1``); a request type's result
types are derived from it (``…succeeded.v1`` / ``…failed.v1``, and ``…progressed.v1`` for the
requests that report steps). The JSON Schemas in ``schemas/`` and the AsyncAPI document are
generated from these registries.
"""

from __future__ import annotations

from provisioner.events.models import (
    AddDevice,
    AddNode,
    CloneVolume,
    CreateSnapshot,
    DeleteSnapshot,
    DeleteVolume,
    DeviceRef,
    ExpandVolume,
    ListSnapshots,
    LoadTopology,
    Model,
    NodeRef,
    ProvisionVolume,
)
from provisioner.events.results import (
    Progress,
    RequestFailed,
    SnapshotCreated,
    SnapshotDeleted,
    SnapshotsListed,
    TopologyLoaded,
    VolumeCloned,
    VolumeDeleted,
    VolumeExpanded,
    VolumeProvisioned,
)

PREFIX = "org.gluster"
PROVISION_REQUESTED = f"{PREFIX}.volume.provision.requested.v1"
DELETE_REQUESTED = f"{PREFIX}.volume.delete.requested.v1"
EXPAND_REQUESTED = f"{PREFIX}.volume.expand.requested.v1"
CLONE_REQUESTED = f"{PREFIX}.volume.clone.requested.v1"
SNAPSHOT_CREATE_REQUESTED = f"{PREFIX}.snapshot.create.requested.v1"
SNAPSHOT_DELETE_REQUESTED = f"{PREFIX}.snapshot.delete.requested.v1"
SNAPSHOT_LIST_REQUESTED = f"{PREFIX}.snapshot.list.requested.v1"
TOPOLOGY_LOAD_REQUESTED = f"{PREFIX}.topology.load.requested.v1"
NODE_ADD_REQUESTED = f"{PREFIX}.node.add.requested.v1"
NODE_REMOVE_REQUESTED = f"{PREFIX}.node.remove.requested.v1"
NODE_ENABLE_REQUESTED = f"{PREFIX}.node.enable.requested.v1"
NODE_DISABLE_REQUESTED = f"{PREFIX}.node.disable.requested.v1"
DEVICE_ADD_REQUESTED = f"{PREFIX}.device.add.requested.v1"
DEVICE_REMOVE_REQUESTED = f"{PREFIX}.device.remove.requested.v1"
DEVICE_ENABLE_REQUESTED = f"{PREFIX}.device.enable.requested.v1"
DEVICE_DISABLE_REQUESTED = f"{PREFIX}.device.disable.requested.v1"
DEVICE_RESYNC_REQUESTED = f"{PREFIX}.device.resync.requested.v1"
TOPOLOGY_CHANGES: dict[str, type[Model]] = {
    NODE_ADD_REQUESTED: AddNode,
    NODE_REMOVE_REQUESTED: NodeRef,
    NODE_ENABLE_REQUESTED: NodeRef,
    NODE_DISABLE_REQUESTED: NodeRef,
    DEVICE_ADD_REQUESTED: AddDevice,
    DEVICE_REMOVE_REQUESTED: DeviceRef,
    DEVICE_ENABLE_REQUESTED: DeviceRef,
    DEVICE_DISABLE_REQUESTED: DeviceRef,
    DEVICE_RESYNC_REQUESTED: DeviceRef,  # read the size again after the disk grew
}

REQUEST_TYPES: dict[str, type[Model]] = {
    PROVISION_REQUESTED: ProvisionVolume,
    DELETE_REQUESTED: DeleteVolume,
    EXPAND_REQUESTED: ExpandVolume,
    CLONE_REQUESTED: CloneVolume,
    SNAPSHOT_CREATE_REQUESTED: CreateSnapshot,
    SNAPSHOT_DELETE_REQUESTED: DeleteSnapshot,
    SNAPSHOT_LIST_REQUESTED: ListSnapshots,
    TOPOLOGY_LOAD_REQUESTED: LoadTopology,
    **TOPOLOGY_CHANGES,
}


REQUEST_KINDS = {
    PROVISION_REQUESTED: "provision",
    DELETE_REQUESTED: "delete",
    EXPAND_REQUESTED: "expand",
    CLONE_REQUESTED: "clone",
    SNAPSHOT_CREATE_REQUESTED: "snapshot_create",
    SNAPSHOT_DELETE_REQUESTED: "snapshot_delete",
    SNAPSHOT_LIST_REQUESTED: "snapshot_list",
    TOPOLOGY_LOAD_REQUESTED: "topology_load",
    **{t: t.split(".")[2] + "_" + t.split(".")[3] for t in TOPOLOGY_CHANGES},  # node_add, device_remove, ...
}
"""A short, bounded name per request type, for logs and metric labels."""


def succeeded_type(request_type: str) -> str:
    return request_type.replace(".requested.", ".succeeded.")


def failed_type(request_type: str) -> str:
    return request_type.replace(".requested.", ".failed.")


def progressed_type(request_type: str) -> str:
    return request_type.replace(".requested.", ".progressed.")


def is_success(event_type: str) -> bool:
    return ".succeeded." in event_type


def is_terminal(event_type: str) -> bool:
    """Whether an event on the results topic is a request's one result (not a progress event)."""
    return ".succeeded." in event_type or ".failed." in event_type


RESULT_TYPES: dict[str, type[Model]] = {
    succeeded_type(PROVISION_REQUESTED): VolumeProvisioned,
    failed_type(PROVISION_REQUESTED): RequestFailed,
    succeeded_type(DELETE_REQUESTED): VolumeDeleted,
    failed_type(DELETE_REQUESTED): RequestFailed,
    succeeded_type(EXPAND_REQUESTED): VolumeExpanded,
    failed_type(EXPAND_REQUESTED): RequestFailed,
    succeeded_type(CLONE_REQUESTED): VolumeCloned,
    failed_type(CLONE_REQUESTED): RequestFailed,
    succeeded_type(SNAPSHOT_CREATE_REQUESTED): SnapshotCreated,
    failed_type(SNAPSHOT_CREATE_REQUESTED): RequestFailed,
    succeeded_type(SNAPSHOT_DELETE_REQUESTED): SnapshotDeleted,
    failed_type(SNAPSHOT_DELETE_REQUESTED): RequestFailed,
    succeeded_type(SNAPSHOT_LIST_REQUESTED): SnapshotsListed,
    failed_type(SNAPSHOT_LIST_REQUESTED): RequestFailed,
    succeeded_type(TOPOLOGY_LOAD_REQUESTED): TopologyLoaded,
    failed_type(TOPOLOGY_LOAD_REQUESTED): RequestFailed,
    **{succeeded_type(t): TopologyLoaded for t in TOPOLOGY_CHANGES},
    **{failed_type(t): RequestFailed for t in TOPOLOGY_CHANGES},
}

PROGRESS_TYPES: dict[str, type[Model]] = {
    progressed_type(PROVISION_REQUESTED): Progress,
    progressed_type(EXPAND_REQUESTED): Progress,
    progressed_type(CLONE_REQUESTED): Progress,
    progressed_type(NODE_REMOVE_REQUESTED): Progress,  # a brick moved off (evacuate)
    progressed_type(DEVICE_REMOVE_REQUESTED): Progress,
}
"""Non-terminal events on the results topic, for long operations."""
