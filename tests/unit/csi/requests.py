"""Builders of valid CSI node requests; a test changes one field to make it invalid."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeAlias

from provisioner.csi.proto import csi_pb2
from tests.unit.csi.fakes import STAGING, TARGET, VOLUME_ID

Mode = csi_pb2.VolumeCapability.AccessMode
ModeValue: TypeAlias = csi_pb2.VolumeCapability.AccessMode.Mode.ValueType
CONTEXT = {"volume": "vol_a", "servers": "10.77.0.11,10.77.0.12,10.77.0.13"}


def capability(mode: ModeValue = Mode.MULTI_NODE_MULTI_WRITER, flags: tuple[str, ...] = ()) -> csi_pb2.VolumeCapability:
    return csi_pb2.VolumeCapability(
        mount=csi_pb2.VolumeCapability.MountVolume(mount_flags=list(flags)),
        access_mode=csi_pb2.VolumeCapability.AccessMode(mode=mode),
    )


def stage(**changes: Any) -> csi_pb2.NodeStageVolumeRequest:
    fields: dict[str, Any] = {
        "volume_id": VOLUME_ID,
        "staging_target_path": str(STAGING),
        "volume_capability": capability(),
        "volume_context": CONTEXT,
    }
    fields.update(changes)
    return csi_pb2.NodeStageVolumeRequest(**{k: v for k, v in fields.items() if v is not None})


def publish(**changes: Any) -> csi_pb2.NodePublishVolumeRequest:
    fields: dict[str, Any] = {
        "volume_id": VOLUME_ID,
        "staging_target_path": str(STAGING),
        "target_path": str(TARGET),
        "volume_capability": capability(),
        "volume_context": CONTEXT,
        "readonly": False,
    }
    fields.update(changes)
    return csi_pb2.NodePublishVolumeRequest(**{k: v for k, v in fields.items() if v is not None})


def unpublish(volume_id: str = VOLUME_ID, target: Path | str = TARGET) -> csi_pb2.NodeUnpublishVolumeRequest:
    return csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=str(target))


def unstage(volume_id: str = VOLUME_ID, staging: Path | str = STAGING) -> csi_pb2.NodeUnstageVolumeRequest:
    return csi_pb2.NodeUnstageVolumeRequest(volume_id=volume_id, staging_target_path=str(staging))
