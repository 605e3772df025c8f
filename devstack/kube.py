"""Access to the real local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager).

It is started by ``deploy/dev/kube.sh up`` (``deploy/dev/stack up`` does it too) and described by
``$DEV_STATE/kube/kubeconfig`` (https://127.0.0.1:16443, the CA embedded, an admin token). If it is not
up, :func:`ensure_kube` starts it; if that fails, the test fails with the reason. There are no skips.
The first start on a new machine builds the binaries from the Go module proxy, which takes a while.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from kubernetes_asyncio import client, config

REPO = Path(__file__).resolve().parent.parent
DEV_STATE = Path(os.environ.get("DEV_STATE", REPO / ".dev"))
KUBE_STATE = DEV_STATE / "kube"
KUBECONFIG = KUBE_STATE / "kubeconfig"
KUBE_SH = REPO / "deploy" / "dev" / "kube.sh"

# `up` may have to build kube-apiserver, kube-controller-manager and etcd first (cold: tens of minutes).
UP_TIMEOUT = 3600.0


def ensure_kube() -> Path:
    """The kubeconfig of the running control plane, starting it first when it is not up."""
    status = subprocess.run([str(KUBE_SH), "status"], capture_output=True, text=True)
    if status.returncode == 0 and KUBECONFIG.is_file():
        return KUBECONFIG
    try:
        started = subprocess.run([str(KUBE_SH), "up"], capture_output=True, text=True, timeout=UP_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(
            f"the Kubernetes control plane is not up and `{KUBE_SH} up` took over {UP_TIMEOUT}s"
        ) from exc
    if started.returncode != 0:
        raise RuntimeError(
            f"the Kubernetes control plane is not up ({status.stderr.strip()}) and `deploy/dev/kube.sh up` "
            f"failed (exit {started.returncode}):\n{started.stderr[-4000:]}"
        )
    if not KUBECONFIG.is_file():
        raise RuntimeError(f"`deploy/dev/kube.sh up` succeeded but wrote no {KUBECONFIG}")
    return KUBECONFIG


@pytest.fixture(scope="session")
def kubeconfig() -> Path:
    """Path of the admin kubeconfig of the local control plane (started when needed)."""
    return ensure_kube()


@asynccontextmanager
async def api_client(kubeconfig: Path) -> AsyncIterator[client.ApiClient]:
    """A ``kubernetes_asyncio`` client for the kubeconfig, closed on exit."""
    api = await config.new_client_from_config(config_file=str(kubeconfig), persist_config=False)
    try:
        yield api
    finally:
        await api.close()


def component_log_tail(component: str, lines: int = 30) -> str:
    """Last lines of a control-plane component's log (etcd, kube-apiserver, kube-controller-manager)."""
    log = KUBE_STATE / f"{component}.log"
    if not log.is_file():
        return f"(no {log})"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
