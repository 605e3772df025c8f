"""The daemon's side of Kubernetes: a claim's PV, Endpoints, Service, annotation and events.

Every method is idempotent, because a request may be redelivered after a crash at any instant:
objects that already exist (for this claim) count as created, objects already gone as removed.
Failures come out as the provisioner's errors (``kube.api.api_error``), so the worker retries the
temporary ones like any other step.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from kubernetes_asyncio import client

from provisioner.errors import PersistentVolumeTaken
from provisioner.events.models import ClaimObjects, ClaimRef, ClaimResize, ClaimVolume
from provisioner.events.results import VolumeOut
from provisioner.kube import manifests, names
from provisioner.kube.api import api_error, as_body

log = logging.getLogger(__name__)
T = TypeVar("T")


class KubeObjects:
    def __init__(self, api: client.ApiClient, *, provisioner: str, timeout: float) -> None:
        """``provisioner``: our name (``provisioned-by``); only objects carrying it are ever deleted."""
        self._core = client.CoreV1Api(api)
        self._provisioner = provisioner
        self._timeout = timeout

    async def _call(self, what: str, call: Callable[[], Awaitable[T]], *, absent_ok: bool = False) -> T | None:
        try:
            return await call()
        except client.ApiException as e:
            if absent_ok and e.status == 404:
                return None
            raise api_error(e, what) from e
        except Exception as e:
            raise api_error(e, what) from e

    async def claim_exists(self, claim: ClaimRef) -> bool:
        """Whether the claim is still there, and is the same claim (uid), not a re-created namesake."""
        found = await self._call(
            f"read claim {claim.namespace}/{claim.name}",
            lambda: self._core.read_namespaced_persistent_volume_claim(
                claim.name, claim.namespace, _request_timeout=self._timeout
            ),
            absent_ok=True,
        )
        return found is not None and found.metadata.uid == claim.uid

    async def provisioning(self, spec: ClaimVolume) -> None:
        claim = spec.claim
        await self.event(
            claim,
            "Provisioning",
            f'External provisioner is provisioning volume for claim "{claim.namespace}/{claim.name}"',
        )

    async def publish(self, spec: ClaimVolume, volume: VolumeOut) -> str:
        """Annotate the claim, create the Endpoints and Service, then the PV; the PV's name.

        The PV comes last because its creation is what lets the binder bind the claim: a Bound claim
        already has its annotation, and a pod that mounts it at once finds the Endpoints it needs."""
        claim = spec.claim
        pv = manifests.persistent_volume(spec, volume)
        name = str(pv["metadata"]["name"])
        existing = await self._existing_pv_uid(name, claim)  # also refuses a PV of that name for another claim
        annotated = await self._call(
            f"annotate claim {claim.namespace}/{claim.name}",
            lambda: self._core.patch_namespaced_persistent_volume_claim(
                claim.name,
                claim.namespace,
                manifests.claim_annotations(volume),
                _request_timeout=self._timeout,
            ),
            absent_ok=True,
        )
        if annotated is None:
            log.warning(
                "claim %s/%s is gone; its PV %s will be Released and deleted", claim.namespace, claim.name, name
            )
        services = (
            ("Service", manifests.service(claim, volume, spec.provisioner), self._core.create_namespaced_service),
            ("Endpoints", manifests.endpoints(claim, volume, spec.provisioner), self._core.create_namespaced_endpoints),
        )
        for kind, body, create in services:
            await self._create_if_absent(f"create {kind} {claim.namespace}/{body['metadata']['name']}", create, body)
        if existing is None:
            created = await self._call(
                f"create PersistentVolume {name}",
                lambda: self._core.create_persistent_volume(as_body(pv), _request_timeout=self._timeout),
            )
            assert created is not None  # absent_ok is off: a failure raises
            existing = str(created.metadata.uid)
            await self.event(claim, "ProvisioningSucceeded", f"Successfully provisioned volume {name}")
        # Now that the PV exists: the Endpoints and Service are its dependents, collected with it.
        owner = manifests.owned_by(name, existing)
        service_name = names.service_name(claim.uid)
        for kind, patch in (
            ("Service", self._core.patch_namespaced_service),
            ("Endpoints", self._core.patch_namespaced_endpoints),
        ):
            await self._call(
                f"own {kind} {claim.namespace}/{service_name} by {name}",
                lambda patch=patch: patch(service_name, claim.namespace, owner, _request_timeout=self._timeout),  # type: ignore[misc]
                absent_ok=True,
            )
        return name

    async def _existing_pv_uid(self, name: str, claim: ClaimRef) -> str | None:
        """The uid of the PV when it is there for this claim; a PV of that name for another claim is a conflict."""
        found = await self._call(
            f"read PersistentVolume {name}",
            lambda: self._core.read_persistent_volume(name, _request_timeout=self._timeout),
            absent_ok=True,
        )
        if found is None:
            return None
        bound = found.spec.claim_ref.uid if found.spec and found.spec.claim_ref else None
        if bound != claim.uid:
            raise PersistentVolumeTaken(
                f"PersistentVolume {name} exists and is not for claim {claim.namespace}/{claim.name} ({claim.uid})",
            )
        return str(found.metadata.uid)

    async def _create_if_absent(self, what: str, create: Callable[..., Awaitable[Any]], body: dict[str, Any]) -> None:
        namespace = body["metadata"]["namespace"]
        try:
            await create(namespace, body, _request_timeout=self._timeout)
        except client.ApiException as e:
            if e.status != 409:
                raise api_error(e, what) from e
        except Exception as e:
            raise api_error(e, what) from e

    async def withdraw(self, objects: ClaimObjects, *, cluster: str, volume_id: str | None, name: str | None) -> None:
        """Remove the Service, Endpoints and PV of a claim whose storage is gone; absent ones are fine.

        Only objects that carry our marks for this volume go (``manifests.is_ours``), each deleted with
        its uid as a precondition, so a request naming someone else's object (``kube-system/kube-dns``)
        deletes nothing, and an object replaced meanwhile is not the one deleted."""
        ns, svc, pv = objects.namespace, objects.service, objects.persistent_volume
        core = self._core
        marks = {"cluster": cluster, "volume_id": volume_id, "name": name}
        await self._withdraw_one(
            f"Service {ns}/{svc}", core.read_namespaced_service, core.delete_namespaced_service, (svc, ns), marks
        )
        await self._withdraw_one(
            f"Endpoints {ns}/{svc}", core.read_namespaced_endpoints, core.delete_namespaced_endpoints, (svc, ns), marks
        )
        await self._withdraw_one(
            f"PersistentVolume {pv}", core.read_persistent_volume, core.delete_persistent_volume, (pv,), marks
        )

    async def _withdraw_one(
        self,
        what: str,
        read: Callable[..., Awaitable[Any]],
        delete: Callable[..., Awaitable[Any]],
        args: tuple[str, ...],
        marks: dict[str, Any],
    ) -> None:
        timeout = self._timeout
        found = await self._call(f"read {what}", lambda: read(*args, _request_timeout=timeout), absent_ok=True)
        if found is None:
            return
        meta = found.metadata
        if not manifests.is_ours(meta.annotations, provisioner=self._provisioner, **marks):
            log.warning("%s is not ours (no marks of volume %s); left alone", what, marks["volume_id"] or marks["name"])
            return
        body = {"preconditions": {"uid": meta.uid}}
        await self._call(f"delete {what}", lambda: delete(*args, body=body, _request_timeout=timeout), absent_ok=True)

    async def resized(self, resize: ClaimResize, size: int) -> None:
        """The PV's capacity, then the claim's status, follow an expansion (gluster needs no fs resize)."""
        capacity = {"storage": names.format_quantity(size)}
        pv, claim = resize.persistent_volume, resize.claim
        await self._call(
            f"resize PersistentVolume {pv}",
            lambda: self._core.patch_persistent_volume(
                pv, {"spec": {"capacity": capacity}}, _request_timeout=self._timeout
            ),
        )
        status = await self._call(
            f"update the capacity of claim {claim.namespace}/{claim.name}",
            lambda: self._core.patch_namespaced_persistent_volume_claim_status(
                claim.name,
                claim.namespace,
                {"status": {"capacity": capacity}},
                _request_timeout=self._timeout,
            ),
            absent_ok=True,
        )
        if status is not None:
            await self.event(claim, "VolumeResizeSuccessful", f"volume {pv} now has {capacity['storage']}")

    async def event(self, claim: ClaimRef, reason: str, message: str, *, warning: bool = False) -> None:
        """Record an event on the claim. Best effort: an event that cannot be written is only logged."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = manifests.claim_event(
            claim, reason=reason, message=message, warning=warning, suffix=uuid.uuid4().hex[:16], now=now
        )
        try:
            await self._core.create_namespaced_event(claim.namespace, as_body(body), _request_timeout=self._timeout)
        except Exception as e:  # noqa: BLE001 - an event is a courtesy, never a reason to fail a request
            log.warning("event %s on claim %s/%s not recorded: %s", reason, claim.namespace, claim.name, e)
