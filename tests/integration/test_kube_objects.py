"""The daemon's Kubernetes adapter against the real kube-apiserver and garbage collector.

It touches only objects it owns: a withdraw that names someone else's Service and Endpoints (a hostile
or mistaken request naming ``kube-system/kube-dns``) deletes nothing, and the Endpoints and Service of a
claim are dependents of its PV, so deleting the PV makes the real garbage collector remove them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from devstack.kube import api_client, ensure_kube
from provisioner.events import models
from provisioner.kube import names
from provisioner.kube.objects import KubeObjects
from tests.integration.test_kube_control_plane import DELETE_TIMEOUT, delete_quietly, gone, poll
from tests.unit.kube.samples import PROVISIONER, VOLUME_ID, volume_out

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def kubeconfig() -> Path:
    return ensure_kube()


@pytest.fixture
async def namespace(kubeconfig: Path) -> AsyncIterator[tuple[client.ApiClient, str]]:
    name = f"kube-objects-{uuid.uuid4().hex[:8]}"
    async with api_client(kubeconfig) as api:
        core = client.CoreV1Api(api)
        await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        try:
            yield api, name
        finally:
            await delete_quietly(lambda: core.delete_namespace(name))


async def make_claim(core: client.CoreV1Api, namespace: str) -> models.ClaimVolume:
    claim = await core.create_namespaced_persistent_volume_claim(
        namespace,
        client.V1PersistentVolumeClaim(
            metadata=client.V1ObjectMeta(name="data"),
            spec=client.V1PersistentVolumeClaimSpec(
                access_modes=["ReadWriteMany"],
                storage_class_name="nobody-provisions-this",
                resources=client.V1VolumeResourceRequirements(requests={"storage": "1Gi"}),
            ),
        ),
    )
    reference = models.ClaimRef(namespace=namespace, name="data", uid=claim.metadata.uid)
    return models.ClaimVolume(claim=reference, storage_class="nobody-provisions-this", provisioner=PROVISIONER)


async def release(core: client.CoreV1Api, spec: models.ClaimVolume) -> None:
    """Delete the claim, as a user does before its PV goes (pv-protection holds a bound PV until then)."""
    claim = spec.claim
    await core.delete_namespaced_persistent_volume_claim(claim.name, claim.namespace)
    await poll(
        "claim gone",
        lambda: gone(lambda: core.read_namespaced_persistent_volume_claim(claim.name, claim.namespace)),
        bool,
        DELETE_TIMEOUT,
    )


async def test_withdraw_leaves_an_object_without_our_marks_alone(namespace: tuple[client.ApiClient, str]) -> None:
    api, ns = namespace
    core = client.CoreV1Api(api)
    foreign = client.V1ObjectMeta(name="kube-dns", labels={"k8s-app": "kube-dns"})
    await core.create_namespaced_service(
        ns, client.V1Service(metadata=foreign, spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=53)]))
    )
    await core.create_namespaced_endpoints(ns, client.V1Endpoints(metadata=foreign))
    objects = KubeObjects(api, provisioner=PROVISIONER, timeout=10)

    hostile = models.ClaimObjects(persistent_volume="kube-dns", namespace=ns, service="kube-dns")
    await objects.withdraw(hostile, cluster="dev", volume_id=VOLUME_ID, name=None)

    assert (await core.read_namespaced_service("kube-dns", ns)).metadata.labels == {"k8s-app": "kube-dns"}
    assert (await core.read_namespaced_endpoints("kube-dns", ns)).metadata.name == "kube-dns"


async def test_withdraw_leaves_another_volumes_objects_alone(namespace: tuple[client.ApiClient, str]) -> None:
    api, ns = namespace
    core = client.CoreV1Api(api)
    spec = await make_claim(core, ns)
    objects = KubeObjects(api, provisioner=PROVISIONER, timeout=10)
    pv = await objects.publish(spec, volume_out())
    await release(core, spec)
    try:
        claim_objects = models.ClaimObjects(
            persistent_volume=pv, namespace=ns, service=names.service_name(spec.claim.uid)
        )
        await objects.withdraw(claim_objects, cluster="dev", volume_id="b" * 32, name=None)
        await core.read_persistent_volume(pv)
        await core.read_namespaced_service(claim_objects.service, ns)

        await objects.withdraw(claim_objects, cluster="dev", volume_id=VOLUME_ID, name=None)
        for read in (
            lambda: core.read_persistent_volume(pv),
            lambda: core.read_namespaced_service(claim_objects.service, ns),
            lambda: core.read_namespaced_endpoints(claim_objects.service, ns),
        ):
            await poll("withdrawn object gone", lambda read=read: gone(read), bool, DELETE_TIMEOUT)  # type: ignore[misc]
    finally:
        await delete_quietly(lambda: core.delete_persistent_volume(pv))


async def test_the_garbage_collector_removes_a_pvs_endpoints_and_service_with_it(
    namespace: tuple[client.ApiClient, str],
) -> None:
    api, ns = namespace
    core = client.CoreV1Api(api)
    spec = await make_claim(core, ns)
    pv = await KubeObjects(api, provisioner=PROVISIONER, timeout=10).publish(spec, volume_out())
    service = names.service_name(spec.claim.uid)
    owners = (await core.read_namespaced_endpoints(service, ns)).metadata.owner_references
    assert [(o.kind, o.name) for o in owners] == [("PersistentVolume", pv)]

    await release(core, spec)
    await core.delete_persistent_volume(pv)
    for read in (
        lambda: core.read_namespaced_service(service, ns),
        lambda: core.read_namespaced_endpoints(service, ns),
    ):
        await poll("dependent gone after its PV", lambda read=read: gone(read), bool, DELETE_TIMEOUT)  # type: ignore[misc]
