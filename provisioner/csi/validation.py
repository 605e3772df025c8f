"""Field checks shared by the node calls: each failure names the CSI field, as ``kubectl describe`` shows it.

Pure functions over the generated request messages. The path rules are in ``provisioner.csi.paths``,
the attribute rules in ``provisioner.csi.attributes`` and the mount option rules in
``provisioner.csi.options``; this module adds the volume id and the volume capability.
"""

from __future__ import annotations

from dataclasses import dataclass

from provisioner.csi.attributes import valid_volume_id
from provisioner.csi.errors import InvalidArgument
from provisioner.csi.options import MountOptions, vet
from provisioner.csi.proto import csi_pb2

AccessMode = csi_pb2.VolumeCapability.AccessMode
READ_ONLY_MODES = frozenset({AccessMode.SINGLE_NODE_READER_ONLY, AccessMode.MULTI_NODE_READER_ONLY})
FS_TYPES = ("", "glusterfs", "fuse.glusterfs")

SUPPORTED_MODES = frozenset(
    {
        AccessMode.SINGLE_NODE_WRITER,
        AccessMode.SINGLE_NODE_READER_ONLY,
        AccessMode.MULTI_NODE_READER_ONLY,
        AccessMode.MULTI_NODE_SINGLE_WRITER,
        AccessMode.MULTI_NODE_MULTI_WRITER,
        AccessMode.SINGLE_NODE_SINGLE_WRITER,
        AccessMode.SINGLE_NODE_MULTI_WRITER,
    }
)
"""A gluster volume is a shared file system: every mode works; the driver only enforces the
single-writer one on its node (SINGLE_NODE_MULTI_WRITER capability) and read-only ones by mounting ro."""


@dataclass(frozen=True, slots=True)
class Capability:
    mode: int
    options: MountOptions

    @property
    def read_only(self) -> bool:
        return self.mode in READ_ONLY_MODES or self.options.read_only

    @property
    def single_writer(self) -> bool:
        return self.mode == AccessMode.SINGLE_NODE_SINGLE_WRITER


def volume_id(value: str, *, field: str = "volume_id") -> str:
    if not value:
        raise InvalidArgument(field, "required, the PV's volumeHandle")
    if not valid_volume_id(value):
        raise InvalidArgument(field, f"{value[:80]!r} is not a volume id of this driver (32 lowercase hex digits)")
    return value


def capability(message: csi_pb2.VolumeCapability, *, present: bool, field: str = "volume_capability") -> Capability:
    if not present:
        raise InvalidArgument(field, "required")
    if message.HasField("block"):
        raise InvalidArgument(f"{field}.block", "block volumes are not supported; gluster volumes are file systems")
    if not message.HasField("mount"):
        raise InvalidArgument(f"{field}.access_type", "required: mount")
    if message.mount.fs_type not in FS_TYPES:
        raise InvalidArgument(f"{field}.mount.fs_type", f"{message.mount.fs_type[:40]!r}; only glusterfs")
    if message.mount.volume_mount_group:
        raise InvalidArgument(
            f"{field}.mount.volume_mount_group",
            "not supported (no VOLUME_MOUNT_GROUP capability): group ownership is set on the bricks",
        )
    if not message.HasField("access_mode") or message.access_mode.mode not in SUPPORTED_MODES:
        raise InvalidArgument(f"{field}.access_mode", "required, and a known mode")
    return Capability(
        mode=message.access_mode.mode,
        options=vet(list(message.mount.mount_flags), field=f"{field}.mount.mount_flags"),
    )
