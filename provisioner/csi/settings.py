"""Settings of the node plugin: ``PROVISIONER_CSI__<FIELD>`` environment variables, checked at start.

Every field says its unit and why it exists. The defaults are those of a DaemonSet pod on a node
whose kubelet uses ``/var/lib/kubelet``: only ``NODE_ID`` (from ``spec.nodeName``) and, to post
events, ``KUBERNETES_EVENTS`` need setting there (``deploy/kubernetes/11-daemonset-csi-node.yaml``).

Derived paths (unset = derived from ``kubelet_root`` and ``driver_name``):

* CSI socket ``<kubelet_root>/plugins/<driver_name>/csi.sock`` -- where kubelet looks for it;
* registration socket ``<kubelet_root>/plugins_registry/<driver_name>-reg.sock`` -- kubelet's
  plugin watcher finds the driver there;
* state ``<kubelet_root>/plugins/<driver_name>/volumes`` -- the per-volume records and client logs.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "PROVISIONER_CSI__"
DEFAULT_DRIVER_NAME = "glusterfs.gluster.org"
DRIVER_NAME_PATTERN = r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$"
SAFE_PATH_PATTERN = r"^/[A-Za-z0-9._/-]*$"
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the terminating NUL


class CsiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    driver_name: str = Field(
        DEFAULT_DRIVER_NAME,
        pattern=DRIVER_NAME_PATTERN,
        description="CSI driver name (DNS-style, at most 63 characters): the CSIDriver object's name and "
        "every PV's spec.csi.driver. The StorageClass provisioner name (gluster.org/glusterfs) is another "
        "thing: it names the daemon that creates the PVs.",
    )
    kubelet_root: Path = Field(
        Path("/var/lib/kubelet"),
        description="Kubelet's --root-dir: the sockets live below it, and by default only paths below it may "
        "be staged or published.",
    )
    endpoint: str | None = Field(
        None,
        pattern=r"^(unix://)?/[A-Za-z0-9._/-]+$",
        description="The CSI socket, unix:///path or /path. Unset: <kubelet_root>/plugins/<driver_name>/csi.sock.",
    )
    registration: bool = Field(
        True,
        description="Serve kubelet's plugin-registration socket (replaces the node-driver-registrar sidecar). "
        "Off for tests without a kubelet.",
    )
    registration_socket: Path | None = Field(
        None,
        description="Unset: <kubelet_root>/plugins_registry/<driver_name>-reg.sock.",
    )
    node_id: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$",
        description="NodeGetInfo's node id: the Kubernetes node name (the DaemonSet sets it from spec.nodeName). "
        "Default: the host name.",
    )
    zone: str = Field(
        "",
        pattern=r"^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$",
        description="The node's zone, reported as the topology segment topology.<driver_name>/zone. Empty: read "
        "from the Node's zone label when kubernetes_events is on, else no topology is reported.",
    )
    zone_node_label: str = Field(
        "topology.kubernetes.io/zone",
        pattern=r"^[A-Za-z0-9./_-]{1,316}$",
        description="The Node label the zone is read from when `zone` is empty and Kubernetes access is on.",
    )
    allowed_path_roots: tuple[Path, ...] = Field(
        (),
        description="Directories below which staging and target paths may lie (JSON list). Empty: just "
        "kubelet_root. csi-sanity runs need its temporary directories here.",
    )
    state_dir: Path | None = Field(
        None,
        description="Per-volume records and glusterfs client logs. "
        "Unset: <kubelet_root>/plugins/<driver_name>/volumes.",
    )
    mount_timeout: Annotated[float, Field(gt=0)] = Field(
        60.0,
        description="Seconds a FUSE mount may take; the client tries every volfile server (about 3 s each "
        "when one does not answer) before it gives up. Kubelet's own limit for a CSI call is 2 minutes.",
    )
    command_timeout: Annotated[float, Field(gt=0)] = Field(
        30.0, description="Seconds for a bind mount, a read-only remount or an unmount."
    )
    stat_timeout: Annotated[float, Field(gt=0)] = Field(
        10.0, description="Seconds a stat/statfs of a mount may take before it counts as hung."
    )
    client_log_level: str = Field(
        "INFO",
        pattern=r"^(TRACE|DEBUG|INFO|WARNING|ERROR|CRITICAL|NONE)$",
        description="log-level of the glusterfs client unless the PV's mountOptions set one. INFO is the "
        "level at which the client logs which server refused, which mount failure events name.",
    )
    http_host: str = Field("0.0.0.0", description="Address of /metrics and /healthz.")  # noqa: S104
    http_port: Annotated[int, Field(ge=0, le=65535)] = Field(
        0, description="Port of /metrics and /healthz (the liveness probe); 0 turns the HTTP server off."
    )
    kubernetes_events: bool = Field(
        False,
        description="Post a Warning event MountFailed on the claim when a mount fails (and read the zone label). "
        "Off: failures are only logged and counted.",
    )
    kubeconfig: Path | None = Field(
        None, description="Kubeconfig for the events; unset = the pod's service account (in-cluster)."
    )
    api_timeout: Annotated[float, Field(gt=0)] = Field(10.0, description="Seconds per Kubernetes API call.")
    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$", description="The driver's own log level.")
    exit_after_stage: bool = Field(
        False, description="Tests only: exit right after answering a NodeStageVolume (a plugin killed mid-mount)."
    )

    @field_validator("kubelet_root", "registration_socket", "state_dir")
    @classmethod
    def _safe_path(cls, value: Path | None) -> Path | None:
        # These paths end up in mount options (the client's log-file) and socket names: absolute,
        # and made of characters that no option parser splits on.
        if value is not None and not re.fullmatch(SAFE_PATH_PATTERN, str(value)):
            raise ValueError(f"{value} must be an absolute path of letters, digits and . _ / -")
        return value

    @field_validator("allowed_path_roots")
    @classmethod
    def _roots(cls, value: tuple[Path, ...]) -> tuple[Path, ...]:
        for root in value:
            if not root.is_absolute() or root == Path("/"):
                raise ValueError(f"{root} must be an absolute directory other than /")
        return value

    @model_validator(mode="after")
    def _socket_paths_fit(self) -> CsiSettings:
        for name, path in (("endpoint", self.socket_path), ("registration_socket", self.registration_path)):
            if len(str(path).encode()) > MAX_SOCKET_PATH:
                raise ValueError(f"{name}: {path} is longer than a unix socket path may be ({MAX_SOCKET_PATH} bytes)")
        return self

    @property
    def socket_path(self) -> Path:
        if self.endpoint:
            return Path(self.endpoint.removeprefix("unix://"))
        return self.kubelet_root / "plugins" / self.driver_name / "csi.sock"

    @property
    def registration_path(self) -> Path:
        return self.registration_socket or self.kubelet_root / "plugins_registry" / f"{self.driver_name}-reg.sock"

    @property
    def state_path(self) -> Path:
        return self.state_dir or self.kubelet_root / "plugins" / self.driver_name / "volumes"

    @property
    def path_roots(self) -> tuple[Path, ...]:
        return self.allowed_path_roots or (self.kubelet_root,)

    @property
    def topology_key(self) -> str:
        return f"topology.{self.driver_name}/zone"
