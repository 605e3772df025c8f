"""The Kubernetes side of volume requests: the claim's PV, Endpoints, Service, capacity and events.

A request that names a claim (``data.kubernetes``) has steps here besides its storage steps: check
that the claim still wants a volume before any is made, publish the claim's objects once the volume
is started, remove them after the storage is gone, follow an expansion, and tell the claim's owner
when provisioning fails. Each step is retried like a node step. The objects themselves are made by
``kube.objects.KubeObjects`` behind the ``KubernetesObjects`` port, so this module needs no API client.
"""

from __future__ import annotations

from typing import Protocol

from provisioner import metrics
from provisioner.errors import ClaimGone, KubernetesDisabled, ProvisionerError
from provisioner.events import models, results
from provisioner.handling.retry import Retrying
from provisioner.kube import names


class KubernetesObjects(Protocol):
    """The objects of claims (``provisioner.kube.objects.KubeObjects``); every call idempotent."""

    async def claim_exists(self, claim: models.ClaimRef) -> bool: ...
    async def provisioning(self, spec: models.ClaimVolume) -> None: ...
    async def publish(self, spec: models.ClaimVolume, volume: results.VolumeOut) -> str: ...
    async def withdraw(
        self, objects: models.ClaimObjects, *, cluster: str, volume_id: str | None, name: str | None
    ) -> None: ...
    async def resized(self, resize: models.ClaimResize, size: int) -> None: ...
    async def event(self, claim: models.ClaimRef, reason: str, message: str, *, warning: bool = False) -> None: ...


class ClaimSteps:
    """One request's Kubernetes steps, retried within its deadline."""

    def __init__(self, objects: KubernetesObjects | None, retrying: Retrying) -> None:
        self._objects = objects
        self._retrying = retrying

    def require(self) -> KubernetesObjects:
        """The objects port; KubernetesDisabled (naming the fix) when this daemon has no API access."""
        if self._objects is None:
            raise KubernetesDisabled(
                "the request names a Kubernetes claim, but this daemon has no Kubernetes access "
                "(set PROVISIONER_KUBERNETES__ENABLED=true and, outside a pod, PROVISIONER_KUBERNETES__KUBECONFIG)"
            )
        return self._objects

    async def still_wanted(self, spec: models.ClaimVolume) -> None:
        """No storage for a claim that is gone: a stale or duplicate request must not leak a volume."""
        objects = self.require()
        claim = spec.claim
        with metrics.step("kubernetes"):
            exists = await self._retrying(lambda: objects.claim_exists(claim), what=f"read claim {claim.name}")
        if not exists:
            raise ClaimGone(
                f"claim {claim.namespace}/{claim.name} (uid {claim.uid}) no longer exists; nothing provisioned"
            )
        await objects.provisioning(spec)

    async def publish(self, spec: models.ClaimVolume, volume: results.VolumeOut) -> str:
        objects = self.require()
        with metrics.step("kubernetes"):
            return await self._retrying(lambda: objects.publish(spec, volume), what=f"publish the PV of {volume.name}")

    async def withdraw(
        self, removed: models.ClaimObjects, *, cluster: str, volume_id: str | None, name: str | None
    ) -> None:
        """The claim's objects that carry our marks for this volume (anything else stays)."""
        objects = self.require()
        with metrics.step("kubernetes"):
            await self._retrying(
                lambda: objects.withdraw(removed, cluster=cluster, volume_id=volume_id, name=name),
                what=f"remove {removed.persistent_volume}",
            )

    async def resized(self, resize: models.ClaimResize, size: int) -> None:
        """The claim's PV and status follow the volume's size (also on a repeated request: idempotent)."""
        objects = self.require()
        with metrics.step("kubernetes"):
            await self._retrying(lambda: objects.resized(resize, size), what=f"resize {resize.persistent_volume}")

    async def failed(self, claim: models.ClaimRef, error: ProvisionerError) -> None:
        """ProvisioningFailed on the claim (best effort: the event port never raises)."""
        if self._objects is not None:
            await self._objects.event(claim, "ProvisioningFailed", f"{error.reason}: {error}", warning=True)


def objects_of(spec: models.ClaimVolume) -> models.ClaimObjects:
    """The objects ``publish`` makes for a claim, by their deterministic names."""
    uid = spec.claim.uid
    return models.ClaimObjects(
        persistent_volume=names.pv_name(uid), namespace=spec.claim.namespace, service=names.service_name(uid)
    )
