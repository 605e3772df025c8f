"""The local Kubernetes control plane is a real one: the PV binder of kube-controller-manager binds a claim.

A StorageClass with a provisioner nobody runs and Immediate binding, a pre-made PersistentVolume of that
class (an in-tree glusterfs source: the API accepts it, nothing mounts it) and a matching claim; the binder
must bind them. Then everything is deleted again, and the protection and namespace controllers must let
the objects go.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from devstack.kube import api_client, component_log_tail, ensure_kube

pytestmark = pytest.mark.integration

BIND_TIMEOUT = 60.0
DELETE_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def kubeconfig() -> Path:
    return ensure_kube()


async def poll(what: str, read: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], timeout: float) -> Any:
    """Read until ``done`` holds; on timeout fail with the last value seen and the controller manager's log."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = await read()
        if done(last):
            return last
        if time.monotonic() > deadline:
            pytest.fail(
                f"{what} not reached within {timeout}s; last seen:\n{last}\n"
                f"--- kube-controller-manager log ---\n{component_log_tail('kube-controller-manager')}"
            )
        await asyncio.sleep(0.5)


async def gone(read: Callable[[], Awaitable[Any]]) -> bool:
    try:
        await read()
    except client.ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


async def delete_quietly(delete: Callable[[], Awaitable[Any]]) -> None:
    try:
        await delete()
    except client.ApiException as exc:
        if exc.status != 404:
            raise


async def test_the_real_binder_binds_a_claim_to_a_matching_volume(kubeconfig: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    namespace, storage_class = f"kube-test-{suffix}", f"kube-test-{suffix}"
    volume_name, claim_name = f"kube-test-pv-{suffix}", "data"
    async with api_client(kubeconfig) as api:
        core, storage = client.CoreV1Api(api), client.StorageV1Api(api)
        try:
            await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
            await storage.create_storage_class(
                client.V1StorageClass(
                    metadata=client.V1ObjectMeta(name=storage_class),
                    provisioner="example.com/none",
                    volume_binding_mode="Immediate",
                    reclaim_policy="Retain",
                )
            )
            await core.create_persistent_volume(
                client.V1PersistentVolume(
                    metadata=client.V1ObjectMeta(name=volume_name, labels={"test": suffix}),
                    spec=client.V1PersistentVolumeSpec(
                        storage_class_name=storage_class,
                        capacity={"storage": "2Gi"},
                        access_modes=["ReadWriteMany"],
                        persistent_volume_reclaim_policy="Retain",
                        glusterfs=client.V1GlusterfsPersistentVolumeSource(
                            endpoints="glusterfs-cluster", path=f"vol_{suffix}"
                        ),
                    ),
                )
            )
            await core.create_namespaced_persistent_volume_claim(
                namespace,
                client.V1PersistentVolumeClaim(
                    metadata=client.V1ObjectMeta(name=claim_name),
                    spec=client.V1PersistentVolumeClaimSpec(
                        storage_class_name=storage_class,
                        access_modes=["ReadWriteMany"],
                        resources=client.V1VolumeResourceRequirements(requests={"storage": "1Gi"}),
                    ),
                ),
            )

            claim = await poll(
                "claim Bound",
                lambda: core.read_namespaced_persistent_volume_claim(claim_name, namespace),
                lambda c: c.status.phase == "Bound",
                BIND_TIMEOUT,
            )
            assert claim.spec.volume_name == volume_name
            assert claim.status.capacity == {"storage": "2Gi"}
            assert "kubernetes.io/pvc-protection" in (claim.metadata.finalizers or [])

            volume = await poll(
                "volume Bound",
                lambda: core.read_persistent_volume(volume_name),
                lambda v: v.status.phase == "Bound",
                BIND_TIMEOUT,
            )
            assert (volume.spec.claim_ref.namespace, volume.spec.claim_ref.name) == (namespace, claim_name)
            assert volume.spec.claim_ref.uid == claim.metadata.uid
            assert "kubernetes.io/pv-protection" in (volume.metadata.finalizers or [])

            # Deleting: the protection controllers drop their finalizers once nothing uses the objects,
            # the binder releases the volume, the namespace controller empties and removes the namespace.
            await core.delete_namespaced_persistent_volume_claim(claim_name, namespace)
            await poll(
                "claim deleted",
                lambda: gone(lambda: core.read_namespaced_persistent_volume_claim(claim_name, namespace)),
                bool,
                DELETE_TIMEOUT,
            )
            await poll(
                "volume Released",
                lambda: core.read_persistent_volume(volume_name),
                lambda v: v.status.phase == "Released",
                BIND_TIMEOUT,
            )
            await core.delete_persistent_volume(volume_name)
            await poll(
                "volume deleted", lambda: gone(lambda: core.read_persistent_volume(volume_name)), bool, DELETE_TIMEOUT
            )
            await core.delete_namespace(namespace)
            await poll("namespace deleted", lambda: gone(lambda: core.read_namespace(namespace)), bool, DELETE_TIMEOUT)
        finally:
            await delete_quietly(lambda: core.delete_namespaced_persistent_volume_claim(claim_name, namespace))
            await delete_quietly(lambda: core.delete_persistent_volume(volume_name))
            await delete_quietly(lambda: storage.delete_storage_class(storage_class))
            await delete_quietly(lambda: core.delete_namespace(namespace))


async def test_a_new_namespace_gets_its_default_service_account(kubeconfig: Path) -> None:
    namespace = f"kube-test-{uuid.uuid4().hex[:8]}"
    async with api_client(kubeconfig) as api:
        core = client.CoreV1Api(api)
        await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
        try:
            await poll(
                "service account default",
                lambda: gone(lambda: core.read_namespaced_service_account("default", namespace)),
                lambda missing: not missing,
                BIND_TIMEOUT,
            )
            await poll(
                "config map kube-root-ca.crt",
                lambda: gone(lambda: core.read_namespaced_config_map("kube-root-ca.crt", namespace)),
                lambda missing: not missing,
                BIND_TIMEOUT,
            )
        finally:
            await delete_quietly(lambda: core.delete_namespace(namespace))
