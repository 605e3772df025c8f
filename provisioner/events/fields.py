"""Validated field types shared by event models.

Everything that can reach a storage node (names, hosts, paths, option keys and values) is held
to a tight pattern here, so a hostile event is rejected at the door rather than quoted later.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from provisioner import mount_options

CLUSTER_ID_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
HEX_ID_PATTERN = r"^[0-9a-f]{32}$"
VOLUME_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$"
HOST_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$"
PATH_PATTERN = r"^/[A-Za-z0-9_./-]{0,254}$"
OPTION_KEY_PATTERN = r"^[a-z][a-z0-9-]*(\.[a-z0-9-]+)+$"
OPTION_VALUE_PATTERN = r"^[A-Za-z0-9_.,:/=+][A-Za-z0-9_.,:/=+-]{0,255}$"
"""A gluster volume option value. Never a leading ``-``: the gluster CLI takes any ``--word`` anywhere
in its argv as one of its own options (``--log-file=...``, ``--remote-host=...``)."""
LABEL_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9_./-]{0,61}[A-Za-z0-9])?$"
TAG_MATCH_PATTERN = r"^([A-Za-z0-9][A-Za-z0-9_./-]{0,62})(!?=)([A-Za-z0-9_./-]{0,63})$"
"""Heketi's device tag match: ``key=value`` or ``key!=value`` (a key is a tag name, see LABEL_PATTERN)."""
KUBE_NAME_PATTERN = r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$"
KUBE_NAMESPACE_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
KUBE_UID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
PROVISIONER_NAME_PATTERN = r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)?$"
MOUNT_OPTION_PATTERN = r"^[a-z_][a-z0-9_-]{0,40}(=[A-Za-z0-9._]{1,32})?$"
CSI_DRIVER_PATTERN = r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$"
CSI_DRIVER = "glusterfs.gluster.org"
"""The project's CSI driver (``provisioner csi``): what PVs with a csi source name."""

MAX_VOLUME_SIZE = 1024**5  # 1 PiB


def _not_reserved_volume_name(name: str) -> str:
    if name.lower() == "all":
        raise ValueError('"all" cannot be the name of a gluster volume')
    return name


def _no_parent_segments(path: str) -> str:
    if any(part in {".", ".."} for part in path.split("/")):
        raise ValueError("path must not contain '.' or '..' segments")
    return path


ALLOWED_OPTION_PREFIXES = (
    "performance.",
    "cluster.",
    "features.",
    "network.",
    "diagnostics.",
    "storage.",
    "server.",
    "client.",
    "disperse.",
)
"""Volume option families a request may set. Access control (auth.*), NFS exports (nfs.*) and our own
ids (user.*) stay under the operator's control."""


def _allowed_option(key: str) -> str:
    if not key.startswith(ALLOWED_OPTION_PREFIXES):
        allowed = ", ".join(p + "*" for p in ALLOWED_OPTION_PREFIXES)
        raise ValueError(f"option {key!r} is not allowed in a request; allowed: {allowed}")
    return key


ClusterIdField = Annotated[str, Field(pattern=CLUSTER_ID_PATTERN, description="Cluster id (DNS label).")]
HexId = Annotated[str, Field(pattern=HEX_ID_PATTERN, description="32 lowercase hex digits.")]
VolumeName = Annotated[
    str,
    Field(pattern=VOLUME_NAME_PATTERN, description="Gluster volume name."),
    AfterValidator(_not_reserved_volume_name),
]
HostName = Annotated[str, Field(pattern=HOST_PATTERN, description="Hostname or IPv4 address.")]
AbsolutePath = Annotated[
    str, Field(pattern=PATH_PATTERN, description="Absolute path."), AfterValidator(_no_parent_segments)
]
OptionKey = Annotated[str, Field(pattern=OPTION_KEY_PATTERN), AfterValidator(_allowed_option)]
OptionValue = Annotated[str, Field(pattern=OPTION_VALUE_PATTERN)]
Label = Annotated[str, Field(pattern=LABEL_PATTERN)]
SizeBytes = Annotated[int, Field(ge=1, le=MAX_VOLUME_SIZE, description="Bytes.")]
KubeName = Annotated[str, Field(pattern=KUBE_NAME_PATTERN, description="Kubernetes object name (DNS subdomain).")]
KubeNamespace = Annotated[str, Field(pattern=KUBE_NAMESPACE_PATTERN, description="Kubernetes namespace.")]
KubeUid = Annotated[str, Field(pattern=KUBE_UID_PATTERN, description="Kubernetes object uid.")]
ProvisionerName = Annotated[str, Field(pattern=PROVISIONER_NAME_PATTERN, max_length=253)]


def _allowed_mount_option(option: str) -> str:
    why = mount_options.problem(option)
    if why is not None:
        raise ValueError(why)
    return option


MountOption = Annotated[
    str,
    Field(pattern=MOUNT_OPTION_PATTERN, description="A glusterfs client mount option on the allow-list."),
    AfterValidator(_allowed_mount_option),
]
CsiDriverName = Annotated[str, Field(pattern=CSI_DRIVER_PATTERN, description="A CSI driver name (DNS-style).")]
