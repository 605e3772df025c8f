"""The CSI Identity service and the node's mount prerequisites behind Probe.

Probe answers ``ready: false`` (not an error: the spec keeps errors for a plugin that needs a
restart) while the node cannot mount a gluster volume at all: ``mount.glusterfs`` (the
glusterfs-client package) is not on the PATH, or ``/dev/fuse`` is missing or not a character
device (the fuse module is not loaded, or the container lacks the device). Kubelet does not call
Probe itself; the driver's own ``/healthz`` does (``provisioner.csi.http``), which is what the
DaemonSet's liveness probe checks.

Plugin capabilities: no CONTROLLER_SERVICE (the daemon, not a CSI controller, creates volumes);
VOLUME_ACCESSIBILITY_CONSTRAINTS only when the node reports a zone (the spec ties the two); online
volume expansion (NodeExpandVolume has nothing to do, the servers grow the volume).
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from provisioner.csi.proto import csi_pb2

Service = csi_pb2.PluginCapability.Service
Expansion = csi_pb2.PluginCapability.VolumeExpansion
MOUNT_HELPER = "mount.glusterfs"
SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def vendor_version() -> str:
    try:
        return metadata.version("gluster-provisioner")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


@dataclass(frozen=True, slots=True)
class Prerequisites:
    """What mounting needs on the node; injectable so tests can take a part away."""

    fuse_device: Path = Path("/dev/fuse")
    find_helper: Callable[[str], str | None] = lambda name: shutil.which(
        name, path=f"{os.environ.get('PATH', '')}:{SEARCH_PATH}"
    )

    def problems(self) -> list[str]:
        found = []
        if self.find_helper(MOUNT_HELPER) is None:
            found.append(f"{MOUNT_HELPER} is not installed (glusterfs-client)")
        try:
            if not stat.S_ISCHR(self.fuse_device.stat().st_mode):
                found.append(f"{self.fuse_device} is not a character device")
        except OSError as e:
            found.append(f"{self.fuse_device} is missing ({e.strerror or e}); load the fuse module")
        return found


class IdentityService:
    def __init__(self, *, driver_name: str, prerequisites: Prerequisites, has_zone: Callable[[], bool]) -> None:
        self._name = driver_name
        self._prerequisites = prerequisites
        self._has_zone = has_zone

    def plugin_info(self) -> csi_pb2.GetPluginInfoResponse:
        return csi_pb2.GetPluginInfoResponse(name=self._name, vendor_version=vendor_version())

    def plugin_capabilities(self) -> csi_pb2.GetPluginCapabilitiesResponse:
        capabilities = [csi_pb2.PluginCapability(volume_expansion=Expansion(type=Expansion.ONLINE))]
        if self._has_zone():
            capabilities.append(
                csi_pb2.PluginCapability(service=Service(type=Service.VOLUME_ACCESSIBILITY_CONSTRAINTS))
            )
        return csi_pb2.GetPluginCapabilitiesResponse(capabilities=capabilities)

    def probe(self) -> tuple[csi_pb2.ProbeResponse, list[str]]:
        """The answer and, when not ready, why (for the log and /healthz)."""
        problems = self._prerequisites.problems()
        response = csi_pb2.ProbeResponse()
        response.ready.value = not problems
        return response, problems
