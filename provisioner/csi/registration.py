"""Kubelet's plugin registration (``pluginregistration.Registration``), served by the driver itself.

Kubelet's plugin watcher looks for sockets in ``<kubelet root>/plugins_registry/``. For each new one
it calls ``GetInfo`` and, when the answer names a CSI plugin, dials the ``endpoint`` it names (the
CSI socket, a path in the host's file system), calls NodeGetInfo there (which fills the CSINode
object and the node's topology labels) and reports the outcome with ``NotifyRegistrationStatus``.
Removing the socket deregisters the plugin.

This is the job of the node-driver-registrar sidecar in most drivers; doing it here means one
container less and no way for the two to disagree about the socket paths. The registration socket is
created only once the CSI socket answers, and removed first at shutdown.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from provisioner.csi.proto import pluginregistration_pb2

log = logging.getLogger(__name__)
CSI_PLUGIN = "CSIPlugin"
SUPPORTED_VERSIONS = ("1.0.0",)
"""The CSI versions kubelet may speak to the driver: kubelet accepts any 1.x and talks v1."""


@dataclass
class Registration:
    driver_name: str
    endpoint: str
    """The CSI socket's path as kubelet sees it (the DaemonSet mounts the kubelet dir at the same path)."""
    registered: bool | None = None
    error: str = ""
    notifications: list[tuple[bool, str]] = field(default_factory=list)

    def info(self) -> pluginregistration_pb2.PluginInfo:
        return pluginregistration_pb2.PluginInfo(
            type=CSI_PLUGIN,
            name=self.driver_name,
            endpoint=self.endpoint,
            supported_versions=list(SUPPORTED_VERSIONS),
        )

    def notify(
        self, status: pluginregistration_pb2.RegistrationStatus
    ) -> pluginregistration_pb2.RegistrationStatusResponse:
        self.registered = status.plugin_registered
        self.error = status.error
        self.notifications.append((status.plugin_registered, status.error))
        if status.plugin_registered:
            log.info("kubelet registered CSI driver %s (endpoint %s)", self.driver_name, self.endpoint)
        else:
            log.error("kubelet refused to register CSI driver %s: %s", self.driver_name, status.error)
        return pluginregistration_pb2.RegistrationStatusResponse()
