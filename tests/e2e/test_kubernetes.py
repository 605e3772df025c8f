"""Claims in, bound PersistentVolumes out: the real kube-apiserver and PV binder, the real daemon and watcher.

The module runs in a world of its own (``devstack.claims.kube_world``). Nothing but the claim is created by
the test: the watcher turns it into a request, the daemon into a volume, a PV, Endpoints and a Service, and
kube-controller-manager binds the claim.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from devstack.claims import KubeWorld, bound, kube_world
from devstack.stack import Stack, TopicReader, produce
from provisioner.events import catalog, models
from provisioner.events.envelope import encode, new_event
from provisioner.kube import names

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(scope="module")
async def env(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[KubeWorld]:
    async with kube_world(stack, tmp_path_factory.mktemp("kube-e2e")) as world:
        yield world


async def test_a_claim_is_provisioned_bound_resized_and_deleted(env: KubeWorld) -> None:
    storage_class = await env.storage_class("delete", reclaim="Delete")
    uid = await env.claim("data", storage_class)
    claim = await env.until("claim Bound", lambda: env.read_claim("data"), bound)

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
    assert pv.spec.csi.driver == "glusterfs.gluster.org"
    assert pv.spec.csi.volume_handle == notes[names.VOLUME_ID]
    volume_name = pv.spec.csi.volume_attributes["volume"]
    assert sorted(pv.spec.csi.volume_attributes["servers"].split(",")) == sorted(env.stack.nodes)

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
    await env.until(
        "PV capacity 2Gi",
        lambda: env.read_pv(pv_name),
        lambda pv: pv is not None and pv.spec.capacity["storage"] == "2Gi",
    )
    await env.until(
        "claim capacity 2Gi",
        lambda: env.read_claim("data"),
        lambda c: c.status.capacity and c.status.capacity.get("storage") == "2Gi",
    )
    grown = await env.gluster_volume(volume_name)
    assert grown is not None and len(grown.bricks) == 6 and grown.type == "Distributed-Replicate"

    # Delete under policy Delete: storage first, then PV, Endpoints and Service.
    await env.core.delete_namespaced_persistent_volume_claim("data", env.namespace)
    await env.until("PV deleted", lambda: env.read_pv(pv_name), lambda pv: pv is None)
    assert not await env.exists("Service", service)
    assert not await env.exists("Endpoints", service)
    assert await env.gluster_volume(volume_name) is None


async def test_retain_keeps_the_volume_and_its_objects(env: KubeWorld) -> None:
    storage_class = await env.storage_class("retain", reclaim="Retain", volumetype="none", pvSource="glusterfs")
    uid = await env.claim("kept", storage_class)
    await env.until("claim Bound", lambda: env.read_claim("kept"), bound)
    pv_name, service = names.pv_name(uid), names.service_name(uid)

    await env.core.delete_namespaced_persistent_volume_claim("kept", env.namespace)
    pv = await env.until(
        "PV Released", lambda: env.read_pv(pv_name), lambda pv: pv is not None and pv.status.phase == "Released"
    )
    await asyncio.sleep(5)  # time for a (wrong) delete request to be sent and served
    assert await env.read_pv(pv_name) is not None
    assert await env.exists("Service", service) and await env.exists("Endpoints", service)
    assert pv.spec.glusterfs.endpoints == service and pv.spec.glusterfs.endpoints_namespace == env.namespace
    volume_name = pv.spec.glusterfs.path  # the in-tree source, for clusters up to 1.25
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


async def test_twenty_claims_survive_a_watcher_kill_with_two_watchers(env: KubeWorld) -> None:
    """Two watchers at once; the first is killed -9 and restarted after half the claims: none lost, none twice."""
    storage_class = await env.storage_class("many", reclaim="Delete", volumetype="none")
    second = env.watcher("b")
    second.start()
    await second.wait_ready()
    first = next(p for p in env.processes if p.command == "watch")
    uids = {}
    for i in range(20):
        uids[f"many-{i:02d}"] = await env.claim(f"many-{i:02d}", storage_class)
        if i == 9:
            first.kill()
            first.start()
            await first.wait_ready()

    for name in uids:
        await env.until(f"claim {name} Bound", lambda n=name: env.read_claim(n), bound)  # type: ignore[misc]
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
        await env.until(f"PV of {uid} deleted", lambda u=uid: env.read_pv(names.pv_name(u)), lambda pv: pv is None)  # type: ignore[misc]
