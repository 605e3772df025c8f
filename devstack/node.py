"""The dev stack's Kubernetes node (kubelet on containerd, ``deploy/dev/node.sh``) and the project's
CSI node plugin running on it, for the pod tests, the demo's Python side and the benchmarks.

The plugin runs as a host process beside kubelet (the DaemonSet of ``deploy/kubernetes/csi`` is for
real clusters: the dev node has no image of the provisioner to run), registered through kubelet's
plugin-registration socket exactly as the pod would be. If the node is not up, ``load_node`` starts
it; if that fails, the run fails with the reason (no skips).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from devstack.stack import DEV_STATE, REPO, Daemon, Stack, read_env

NODE_SH = REPO / "deploy" / "dev" / "node.sh"
CSI_DRIVER_MANIFEST = REPO / "deploy" / "kubernetes" / "csi" / "01-csidriver.yaml"
DRIVER = "glusterfs.gluster.org"


@dataclass(frozen=True)
class Node:
    name: str
    busybox: str  # the locally built workload image
    kubelet_root: Path


def load_node() -> Node:
    status = subprocess.run([str(NODE_SH), "status"], capture_output=True, text=True, env=_env())
    if status.returncode != 0:
        started = subprocess.run([str(NODE_SH), "up"], capture_output=True, text=True, env=_env())
        if started.returncode != 0:
            raise RuntimeError(
                f"the Kubernetes node is not up and `deploy/dev/node.sh up` failed (exit {started.returncode}):\n"
                f"{started.stderr[-4000:]}"
            )
    values = read_env(DEV_STATE / "node" / "env")
    return Node(name=values["NODE_NAME"], busybox=values["IMAGE_BUSYBOX"], kubelet_root=Path(values["KUBELET_ROOT"]))


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "DEV_STATE": str(DEV_STATE)}


class CsiPlugin(Daemon):
    """``provisioner csi`` on the dev node, posting MountFailed events through ``kubeconfig``."""

    def __init__(self, stack: Stack, log: Path, node: Node, kubeconfig: Path, **settings: str) -> None:
        env = {
            "PROVISIONER_CSI__NODE_ID": node.name,
            "PROVISIONER_CSI__KUBELET_ROOT": str(node.kubelet_root),
            "PROVISIONER_CSI__KUBERNETES_EVENTS": "true",
            "PROVISIONER_CSI__KUBECONFIG": str(kubeconfig),
            **{f"PROVISIONER_CSI__{k.upper()}": v for k, v in settings.items()},
        }
        super().__init__(stack, log, extra_env=env, command="csi", http="PROVISIONER_CSI__HTTP_", ready_path="/healthz")


async def ensure_csi_driver() -> None:
    """The CSIDriver object of ``deploy/kubernetes/csi``, applied as an operator would (``kubectl apply``,
    so later applies of the same manifest see their own annotation); cluster-wide, left in place."""
    kube = read_env(DEV_STATE / "kube" / "env")
    process = await asyncio.create_subprocess_exec(
        kube["KUBECTL"],
        f"--kubeconfig={kube['KUBECONFIG']}",
        "apply",
        "-f",
        str(CSI_DRIVER_MANIFEST),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"kubectl apply -f {CSI_DRIVER_MANIFEST} failed: {out.decode()}{err.decode()}")


async def wait_registered(api: client.ApiClient, node: Node, *, timeout: float = 60) -> None:
    """Until kubelet lists the driver in the node's CSINode (the registration socket worked)."""
    storage = client.StorageV1Api(api)
    deadline = time.monotonic() + timeout
    seen: Any = None
    while time.monotonic() < deadline:
        try:
            # raw JSON: the client's model refuses a CSINode whose drivers list is still empty
            response = await storage.read_csi_node(node.name, _preload_content=False)
            seen = json.loads(await response.read())  # type: ignore[attr-defined]  # a raw aiohttp response
            if any(d.get("name") == DRIVER for d in (seen.get("spec") or {}).get("drivers") or []):
                return
        except client.ApiException as e:
            if e.status != 404:
                raise
        await asyncio.sleep(0.5)
    raise RuntimeError(f"kubelet did not register {DRIVER} within {timeout}s; CSINode: {seen}")
