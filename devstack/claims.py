"""A world of claims on the dev stack: the real daemon and watcher, a namespace, StorageClasses,
claims and pods, and the means to look at them (the Kubernetes API, the gluster nodes).

Each world gets its own topics (a fresh ``Stack`` prefix), its own gluster cluster id (the dev
topology loaded under it), its own namespace (the watchers' Lease lives there too), its own
provisioner name and StorageClasses, so several share the apiserver and the nodes without
crosstalk. ``kube_world`` starts the daemon and a watcher and removes everything it made.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from devstack.kube import api_client, component_log_tail, ensure_kube
from devstack.stack import Daemon, Stack, load_topology
from provisioner.storage import commands
from provisioner.storage.parsing import VolumeInfo, parse_volume_info

TIMEOUT = 240.0


def claim_body(name: str, namespace: str, storage_class: str, size: str = "1Gi") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": storage_class,
            "resources": {"requests": {"storage": size}},
        },
    }


class KubeWorld:
    """Everything one world set up, and the clients to look at it."""

    def __init__(self, stack: Stack, api: client.ApiClient, run_id: str, kubeconfig: Path, tmp: Path) -> None:
        self.stack = stack
        self.api = api
        self.core = client.CoreV1Api(api)
        self.storage = client.StorageV1Api(api)
        self.cluster = f"kube-{run_id}"
        self.namespace = f"e2e-{run_id}"
        self.provisioner = f"gluster.org/e2e-{run_id}"
        self.run_id = run_id
        self.tmp = tmp
        self.kubeconfig = kubeconfig
        self.env = {
            "PROVISIONER_KUBERNETES__ENABLED": "true",
            "PROVISIONER_KUBERNETES__KUBECONFIG": str(kubeconfig),
            "PROVISIONER_KUBERNETES__PROVISIONER_NAME": self.provisioner,
            "PROVISIONER_KUBERNETES__NAMESPACE": self.namespace,
            "PROVISIONER_KUBERNETES__LEASE_DURATION": "4",
        }
        self.processes: list[Daemon] = []

    def watcher(self, label: str) -> Daemon:
        watcher = Daemon(self.stack, self.tmp / f"watch-{label}.log", extra_env=self.env, command="watch")
        self.processes.append(watcher)
        return watcher

    async def storage_class(
        self, suffix: str, *, reclaim: str, volumetype: str = "replicate:3", **parameters: str
    ) -> str:
        name = f"e2e-{self.run_id}-{suffix}"
        body = {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": name},
            "provisioner": self.provisioner,
            "reclaimPolicy": reclaim,
            "allowVolumeExpansion": True,
            "volumeBindingMode": "Immediate",
            "mountOptions": ["log-level=ERROR"],
            "parameters": {
                "cluster": self.cluster,
                "volumetype": volumetype,
                "gidMin": "40000",
                "gidMax": "40999",
                "volumeoptions": "performance.readdir-ahead on",
                **parameters,
            },
        }
        await self.storage.create_storage_class(body)  # type: ignore[arg-type]
        return name

    async def claim(self, name: str, storage_class: str, size: str = "1Gi") -> str:
        body = claim_body(name, self.namespace, storage_class, size)
        created = await self.core.create_namespaced_persistent_volume_claim(self.namespace, body)  # type: ignore[arg-type]
        return str(created.metadata.uid)

    async def read_claim(self, name: str) -> Any:
        return await self.core.read_namespaced_persistent_volume_claim(name, self.namespace)

    async def read_pv(self, name: str) -> Any:
        return await _absent_as_none(self.core.read_persistent_volume(name))

    async def read_pod(self, name: str) -> Any:
        return await _absent_as_none(self.core.read_namespaced_pod(name, self.namespace))

    async def exists(self, kind: str, name: str) -> bool:
        read = self.core.read_namespaced_service if kind == "Service" else self.core.read_namespaced_endpoints
        return await _absent_as_none(read(name, self.namespace)) is not None

    async def gluster_volume(self, volume_name: str) -> VolumeInfo | None:
        """``gluster volume info`` of the volume on the first node, or None when gluster has no such volume."""
        ssh = self.stack.ssh()
        try:
            info = await ssh.run(
                self.stack.nodes[0], commands.volume_info(volume_name, timeout=30), timeout=60, check=False
            )
        finally:
            await ssh.close()
        found = parse_volume_info(info.stdout) if info.exit_status == 0 else []
        return found[0] if found else None

    async def until(self, what: str, read: Callable[[], Awaitable[Any]], done: Callable[[Any], bool]) -> Any:
        deadline = time.monotonic() + TIMEOUT
        last: Any = None
        while time.monotonic() < deadline:
            last = await read()
            if done(last):
                return last
            await asyncio.sleep(0.5)
        raise AssertionError(
            f"{what}: not within {TIMEOUT}s; last seen: {last}\n{self.logs()}\n"
            f"--- kube-controller-manager ---\n{component_log_tail('kube-controller-manager')}"
        )

    def logs(self) -> str:
        return "\n".join(f"--- {p.log.name} ---\n{p.tail(40)}" for p in self.processes)


async def _absent_as_none(call: Awaitable[Any]) -> Any:
    try:
        return await call
    except client.ApiException as e:
        if e.status == 404:
            return None
        raise


def bound(claim: Any) -> bool:
    return bool(claim.status and claim.status.phase == "Bound")


@contextlib.asynccontextmanager
async def kube_world(stack: Stack, tmp: Path) -> AsyncIterator[KubeWorld]:
    """A daemon (with Kubernetes on) and a watcher of a new world; everything it made goes at the end."""
    kubeconfig = ensure_kube()
    own = Stack(env=stack.env, gluster=stack.gluster)
    run_id = uuid.uuid4().hex[:8]
    async with api_client(kubeconfig) as api:
        world = KubeWorld(own, api, run_id, kubeconfig, tmp)
        await world.core.create_namespace({"metadata": {"name": world.namespace}})  # type: ignore[arg-type]
        daemon = Daemon(own, tmp / "daemon.log", extra_env=world.env)
        world.processes.append(daemon)
        daemon.start()
        watcher = world.watcher("a")
        watcher.start()
        try:
            await daemon.wait_ready()
            await watcher.wait_ready()
            await load_topology(own, world.cluster)
            yield world
        finally:
            for process in world.processes:
                process.stop()
            print(f"\n{world.logs()}")
            classes = await world.storage.list_storage_class()
            for sc in classes.items:
                if sc.metadata.name.startswith(f"e2e-{run_id}-"):
                    await world.storage.delete_storage_class(sc.metadata.name)
            await world.core.delete_namespace(world.namespace)
