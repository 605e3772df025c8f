"""Claims in, bound PersistentVolumes out: the real kube-apiserver and PV binder, the real daemon and watcher.

Each test module run gets its own topics (a fresh ``Stack`` prefix), its own gluster cluster id (the dev
topology loaded under it), its own namespace (the watchers' Lease lives there too), its own provisioner
name and StorageClasses, so it shares the apiserver and the nodes with other tests without crosstalk.
Nothing but the claim is created by the test: the watcher turns it into a request, the daemon into a
volume, a PV, Endpoints and a Service, and kube-controller-manager binds the claim.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from devstack.kube import api_client, component_log_tail, ensure_kube
from devstack.stack import Daemon, Stack, TopicReader, load_topology, produce
from provisioner.events import catalog, models
from provisioner.events.envelope import encode, new_event
from provisioner.kube import names
from provisioner.storage import commands
from provisioner.storage.parsing import parse_volume_info

pytestmark = pytest.mark.integration
TIMEOUT = 240.0


class Cluster:
    """Everything one module run set up, and the clients to look at it."""

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
        self.env = {
            "PROVISIONER_KUBERNETES__ENABLED": "true",
            "PROVISIONER_KUBERNETES__KUBECONFIG": str(kubeconfig),
            "PROVISIONER_KUBERNETES__PROVISIONER_NAME": self.provisioner,
            "PROVISIONER_KUBERNETES__NAMESPACE": self.namespace,
            "PROVISIONER_KUBERNETES__LEASE_DURATION": "4",
        }
        self.watchers: list[Daemon] = []

    def watcher(self, label: str) -> Daemon:
        watcher = Daemon(self.stack, self.tmp / f"watch-{label}.log", extra_env=self.env, command="watch")
        self.watchers.append(watcher)
        return watcher

    async def storage_class(self, suffix: str, *, reclaim: str, volumetype: str = "replicate:3") -> str:
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
            },
        }
        await self.storage.create_storage_class(body)  # type: ignore[arg-type]
        return name

    async def claim(self, name: str, storage_class: str, size: str = "1Gi") -> str:
        body = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": storage_class,
                "resources": {"requests": {"storage": size}},
            },
        }
        created = await self.core.create_namespaced_persistent_volume_claim(self.namespace, body)  # type: ignore[arg-type]
        return str(created.metadata.uid)

    async def read_claim(self, name: str) -> Any:
        return await self.core.read_namespaced_persistent_volume_claim(name, self.namespace)

    async def read_pv(self, name: str) -> Any:
        try:
            return await self.core.read_persistent_volume(name)
        except client.ApiException as e:
            if e.status == 404:
                return None
            raise

    async def exists(self, kind: str, name: str) -> bool:
        read = self.core.read_namespaced_service if kind == "Service" else self.core.read_namespaced_endpoints
        try:
            await read(name, self.namespace)
        except client.ApiException as e:
            if e.status == 404:
                return False
            raise
        return True

    async def gluster_volume(self, volume_name: str) -> Any:
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

    def logs(self) -> str:
        return "\n".join(f"--- {w.log.name} ---\n{w.tail(40)}" for w in self.watchers)


async def until(what: str, read: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], env: Cluster) -> Any:
    deadline = time.monotonic() + TIMEOUT
    last: Any = None
    while time.monotonic() < deadline:
        last = await read()
        if done(last):
            return last
        await asyncio.sleep(0.5)
    raise AssertionError(
        f"{what}: not within {TIMEOUT}s; last seen: {last}\n{env.logs()}\n"
        f"--- kube-controller-manager ---\n{component_log_tail('kube-controller-manager')}"
    )


@pytest_asyncio.fixture(scope="module")
async def env(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    kubeconfig = ensure_kube()
    tmp = tmp_path_factory.mktemp("kube-e2e")
    own = Stack(env=stack.env, gluster=stack.gluster)
    run_id = uuid.uuid4().hex[:8]
    async with api_client(kubeconfig) as api:
        cluster = Cluster(own, api, run_id, kubeconfig, tmp)
        await cluster.core.create_namespace({"metadata": {"name": cluster.namespace}})  # type: ignore[arg-type]
        daemon = Daemon(own, tmp / "daemon.log", extra_env=cluster.env)
        daemon.start()
        watcher = cluster.watcher("a")
        watcher.start()
        try:
            await daemon.wait_ready()
            await watcher.wait_ready()
            await load_topology(own, cluster.cluster)
            yield cluster
        finally:
            for process in [*cluster.watchers, daemon]:
                process.stop()
            print(f"\n--- daemon ---\n{daemon.tail(40)}\n{cluster.logs()}")
            classes = await cluster.storage.list_storage_class()
            for sc in classes.items:
                if sc.metadata.name.startswith(f"e2e-{run_id}-"):
                    await cluster.storage.delete_storage_class(sc.metadata.name)
            await cluster.core.delete_namespace(cluster.namespace)


def bound(claim: Any) -> bool:
    return bool(claim.status and claim.status.phase == "Bound")


async def test_a_claim_is_provisioned_bound_resized_and_deleted(env: Cluster) -> None:
    storage_class = await env.storage_class("delete", reclaim="Delete")
    uid = await env.claim("data", storage_class)
    claim = await until("claim Bound", lambda: env.read_claim("data"), bound, env)

    pv_name = names.pv_name(uid)
    assert claim.spec.volume_name == pv_name
    pv = await env.read_pv(pv_name)
    notes = pv.metadata.annotations
    assert notes[names.PROVISIONED_BY] == env.provisioner
    assert 40000 <= int(notes[names.GID]) <= 40999
    assert pv.spec.claim_ref.uid == uid
    assert pv.spec.persistent_volume_reclaim_policy == "Delete"
    assert pv.spec.storage_class_name == storage_class
    assert pv.spec.mount_options == ["log-level=ERROR"]
    assert pv.spec.access_modes == ["ReadWriteMany"]
    assert pv.spec.capacity["storage"] == "1Gi"
    service = names.service_name(uid)
    assert pv.spec.glusterfs.endpoints == service
    assert pv.spec.glusterfs.endpoints_namespace == env.namespace
    volume_name = pv.spec.glusterfs.path

    endpoints = await env.core.read_namespaced_endpoints(service, env.namespace)
    assert sorted(a.ip for a in endpoints.subsets[0].addresses) == sorted(env.stack.nodes)
    svc = await env.core.read_namespaced_service(service, env.namespace)
    assert svc.spec.cluster_ip == "None"
    assert claim.metadata.annotations[names.VOLUME_ID] == notes[names.VOLUME_ID]

    gluster = await env.gluster_volume(volume_name)
    assert gluster is not None and gluster.status == "Started" and gluster.type == "Replicate"
    assert gluster.options["user.provisioner.id"] == notes[names.VOLUME_ID]
    assert gluster.options["performance.readdir-ahead"] == "on"
    events = await env.core.list_namespaced_event(env.namespace, field_selector=f"involvedObject.uid={uid}")
    reasons = {e.reason for e in events.items}
    assert {"Provisioning", "ProvisioningSucceeded"} <= reasons, reasons

    # Resize: the watcher asks for an expansion, the volume grows by a whole replica set, the PV follows.
    await env.core.patch_namespaced_persistent_volume_claim(
        "data", env.namespace, {"spec": {"resources": {"requests": {"storage": "2Gi"}}}}
    )
    await until(
        "PV capacity 2Gi",
        lambda: env.read_pv(pv_name),
        lambda pv: pv is not None and pv.spec.capacity["storage"] == "2Gi",
        env,
    )
    await until(
        "claim capacity 2Gi",
        lambda: env.read_claim("data"),
        lambda c: c.status.capacity and c.status.capacity.get("storage") == "2Gi",
        env,
    )
    grown = await env.gluster_volume(volume_name)
    assert grown is not None and len(grown.bricks) == 6 and grown.type == "Distributed-Replicate"

    # Delete under policy Delete: storage first, then PV, Endpoints and Service.
    await env.core.delete_namespaced_persistent_volume_claim("data", env.namespace)
    await until("PV deleted", lambda: env.read_pv(pv_name), lambda pv: pv is None, env)
    assert not await env.exists("Service", service)
    assert not await env.exists("Endpoints", service)
    assert await env.gluster_volume(volume_name) is None


async def test_retain_keeps_the_volume_and_its_objects(env: Cluster) -> None:
    storage_class = await env.storage_class("retain", reclaim="Retain", volumetype="none")
    uid = await env.claim("kept", storage_class)
    await until("claim Bound", lambda: env.read_claim("kept"), bound, env)
    pv_name, service = names.pv_name(uid), names.service_name(uid)

    await env.core.delete_namespaced_persistent_volume_claim("kept", env.namespace)
    pv = await until(
        "PV Released", lambda: env.read_pv(pv_name), lambda pv: pv is not None and pv.status.phase == "Released", env
    )
    await asyncio.sleep(5)  # time for a (wrong) delete request to be sent and served
    assert await env.read_pv(pv_name) is not None
    assert await env.exists("Service", service) and await env.exists("Endpoints", service)
    volume_name = pv.spec.glusterfs.path
    assert (await env.gluster_volume(volume_name)) is not None

    # The operator's way out: a delete request naming the objects removes everything.
    request = new_event(
        catalog.DELETE_REQUESTED,
        models.DeleteVolume(
            cluster=env.cluster,
            volume_id=pv.metadata.annotations[names.VOLUME_ID],
            kubernetes=models.ClaimObjects(persistent_volume=pv_name, namespace=env.namespace, service=service),
        ),
        source="/tests/e2e",
    )
    value, headers = encode(request)
    async with TopicReader(env.stack, env.stack.topic("results")) as results:
        await produce(env.stack, value, key=env.cluster.encode(), headers=headers)
        result = await results.wait_result(request.id)
    assert result.type.endswith(".succeeded.v1"), result.data
    assert await env.read_pv(pv_name) is None
    assert not await env.exists("Service", service)
    assert await env.gluster_volume(volume_name) is None


async def test_twenty_claims_survive_a_watcher_kill_with_two_watchers(env: Cluster) -> None:
    """Two watchers at once; the first is killed -9 and restarted after half the claims: none lost, none twice."""
    storage_class = await env.storage_class("many", reclaim="Delete", volumetype="none")
    second = env.watcher("b")
    second.start()
    await second.wait_ready()
    first = env.watchers[0]
    uids = {}
    for i in range(20):
        uids[f"many-{i:02d}"] = await env.claim(f"many-{i:02d}", storage_class)
        if i == 9:
            first.kill()
            first.start()
            await first.wait_ready()

    for name in uids:
        await until(f"claim {name} Bound", lambda n=name: env.read_claim(n), bound, env)  # type: ignore[misc]
    pvs = [await env.read_pv(names.pv_name(uid)) for uid in uids.values()]
    gids = [int(pv.metadata.annotations[names.GID]) for pv in pvs]
    assert len(set(gids)) == 20, f"gids collide: {sorted(gids)}"
    volume_ids = {pv.metadata.annotations[names.VOLUME_ID] for pv in pvs}
    assert len(volume_ids) == 20

    shown = env.stack.cli("state", "show", "--cluster", env.cluster, "--json")
    assert shown.returncode == 0, shown.stderr
    ours = [v for v in json.loads(shown.stdout)["volumes"] if dict(v["labels"]).get("kubernetes.claim") in uids]
    assert sorted(v["id"] for v in ours) == sorted(volume_ids), "exactly one volume per claim in the desired state"

    for name in uids:
        await env.core.delete_namespaced_persistent_volume_claim(name, env.namespace)
    for uid in uids.values():
        await until(f"PV of {uid} deleted", lambda u=uid: env.read_pv(names.pv_name(u)), lambda pv: pv is None, env)  # type: ignore[misc]
