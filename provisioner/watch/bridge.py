"""What the watcher asks for, object by object: the decisions made on every claim and PV it sees.

``ClaimBridge`` is handed each claim and PV as the informers list and watch them. It reserves gids
on claims, reads StorageClasses (cached), decides through ``watch.decisions`` whether a provision,
delete or expand request is due, and sends it; a request is resent at most once per resync period.
Claims that cannot be served get a ``ProvisioningFailed`` event instead, once per version.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from kubernetes_asyncio import client

from provisioner import metrics
from provisioner.errors import InvalidClaim, ProvisionerError, TemporaryError
from provisioner.events import catalog
from provisioner.events.envelope import Event, new_event
from provisioner.kube import names
from provisioner.kube.api import api_error
from provisioner.kube.objects import KubeObjects
from provisioner.settings import Settings
from provisioner.watch import decisions as claims
from provisioner.watch.gids import GidPool
from provisioner.watch.informer import Obj
from provisioner.watch.storage_class import class_parameters

log = logging.getLogger(__name__)
Send = Callable[[Event, str], Awaitable[None]]
CLASS_CACHE_SECONDS = 30.0
_REQUEST_IDS = uuid.UUID("9b3b1f4e-6a52-4c1e-9f0d-3f6f2d1c7a10")


def request_id(*parts: str) -> str:
    """The same id for the same intent, so a resent request is recognisably the same one."""
    return uuid.uuid5(_REQUEST_IDS, "/".join(parts)).hex


class ClaimBridge:
    """Decides, for every claim and PV seen, whether a request must be sent (idempotent per object)."""

    def __init__(self, api: client.ApiClient, send: Send, settings: Settings) -> None:
        self._api = api
        self._core = client.CoreV1Api(api)
        self._storage = client.StorageV1Api(api)
        self._objects = KubeObjects(
            api, provisioner=settings.kubernetes.provisioner_name, timeout=settings.kubernetes.api_timeout
        )
        self._send = send
        self._settings = settings
        self._name = settings.kubernetes.provisioner_name
        self._resend_after = settings.kubernetes.resync
        self._gids = GidPool()
        self._volumes: dict[str, Obj] = {}  # our PVs by name
        self._pv_gids: dict[str, int] = {}  # gid of every PV seen, by PV name
        self._classes: dict[str, tuple[float, Obj | None]] = {}
        self._sent: dict[str, float] = {}  # request id -> when
        self._refused: set[tuple[str, str]] = set()  # (claim uid, resourceVersion) already refused

    # --- PersistentVolumes ---------------------------------------------------------------------

    async def volumes_listed(self, items: Sequence[Obj]) -> None:
        self._volumes = {}
        self._pv_gids = {}
        for pv in items:
            await self.volume_changed("SYNC", pv)

    async def volume_changed(self, kind: str, pv: Obj) -> None:
        gid = claims.reserved_gid(pv)
        name = (pv.get("metadata") or {}).get("name", "")
        if kind == "DELETED":
            self._volumes.pop(name, None)
            self._pv_gids.pop(name, None)
            if gid is not None:
                self._gids.release(gid)
            return
        if gid is not None:
            self._gids.mark(gid)
            self._pv_gids[name] = gid
        if not claims.ours(pv, self._name):
            return
        self._volumes[name] = pv
        try:
            request = claims.delete_request(pv, self._name)
        except ValueError as e:  # annotations edited by hand
            log.error("PersistentVolume %s: cannot form a delete request: %s", name, e)
            return
        if request is not None:
            await self._request(catalog.DELETE_REQUESTED, request, "delete", claims.uid(pv))

    # --- claims ----------------------------------------------------------------------------------

    async def claims_listed(self, items: Sequence[Obj]) -> None:
        for claim in items:  # every reserved gid first, so no claim is handed another's
            gid = claims.reserved_gid(claim)
            if gid is not None:
                self._gids.mark(gid)
        for claim in items:
            await self.claim_changed("SYNC", claim)

    async def claim_changed(self, kind: str, claim: Obj) -> None:
        if kind == "DELETED":
            gid = claims.reserved_gid(claim)
            if gid is not None and gid not in self._pv_gids.values():
                self._gids.release(gid)  # reserved, never used by a PV: free again
            return
        try:
            await self._claim(claim)
        except TemporaryError as e:
            log.warning("claim %s: %s; retried at its next event or the resync", claims.uid(claim), e)
        except ProvisionerError as e:
            await self._refuse(claim, e)
        except ValueError as e:  # a hand-edited annotation or an object the models refuse
            await self._refuse(claim, InvalidClaim(f"claim {claims.uid(claim)}: {e}"))

    async def _claim(self, claim: Obj) -> None:
        class_name = claims.class_name(claim)
        storage_class = await self._storage_class(class_name) if class_name else None
        class_provisioner = storage_class.get("provisioner") if storage_class else None
        uid = claims.uid(claim)
        if claims.needs_volume(claim, self._name, class_provisioner):
            if names.pv_name(uid) in self._volumes:
                return  # provisioned; the binder is on its way
            if storage_class is None:
                raise InvalidClaim(f"StorageClass {class_name!r} of the claim does not exist")
            params = class_parameters(class_name or "", storage_class.get("parameters"))
            gid = await self._gid_for(claim, params.gid_min, params.gid_max)
            if gid is None:
                return  # the claim changed under us; its next event retries
            request = claims.provision_request(claim, storage_class, params, gid=gid, provisioner=self._name)
            await self._request(catalog.PROVISION_REQUESTED, request, "provision", uid)
            return
        volume = self._volumes.get(((claim.get("spec") or {}).get("volumeName")) or "")
        if volume is not None:
            expand = claims.expand_request(claim, volume, self._name)
            if expand is not None:
                await self._request(catalog.EXPAND_REQUESTED, expand, "expand", uid, str(expand.size))

    async def _gid_for(self, claim: Obj, low: int, high: int) -> int | None:
        """The claim's reserved gid, or a new one reserved on it now (None if the claim changed meanwhile)."""
        reserved = claims.reserved_gid(claim)
        if reserved is not None:
            return reserved
        gid = self._gids.allocate(low, high)
        meta = claim.get("metadata") or {}
        name, namespace = str(meta.get("name")), str(meta.get("namespace"))
        patch = {
            "metadata": {"resourceVersion": meta.get("resourceVersion"), "annotations": {names.CLAIM_GID: str(gid)}}
        }
        try:
            await self._core.patch_namespaced_persistent_volume_claim(name, namespace, patch)
        except client.ApiException as e:
            self._gids.release(gid)
            if e.status in (404, 409):
                return None
            raise api_error(e, f"reserve gid {gid} on claim {namespace}/{name}") from e
        return gid

    async def _storage_class(self, name: str) -> Obj | None:
        cached = self._classes.get(name)
        if cached is not None and time.monotonic() - cached[0] < CLASS_CACHE_SECONDS:
            return cached[1]
        try:
            found = await self._storage.read_storage_class(name)
            body: Obj | None = self._api.sanitize_for_serialization(found)
        except client.ApiException as e:
            if e.status != 404:
                raise api_error(e, f"read StorageClass {name}") from e
            body = None
        self._classes[name] = (time.monotonic(), body)
        return body

    async def _refuse(self, claim: Obj, error: ProvisionerError) -> None:
        """Tell the claim's owner why (once per version of the claim); nothing goes to Kafka."""
        meta = claim.get("metadata") or {}
        key = (str(meta.get("uid")), str(meta.get("resourceVersion")))
        if key in self._refused:
            return
        self._refused.add(key)
        metrics.WATCH_CLAIMS_REFUSED.inc()
        log.warning("claim %s/%s: %s", meta.get("namespace"), meta.get("name"), error)
        try:
            ref = claims.claim_ref(claim)
        except ValueError:
            return
        await self._objects.event(ref, "ProvisioningFailed", f"{error.reason}: {error}", warning=True)

    # --- sending ---------------------------------------------------------------------------------

    async def _request(self, type_: str, data: Any, kind: str, *parts: str) -> None:
        id_ = request_id(kind, *parts)
        sent = self._sent.get(id_)
        if sent is not None and time.monotonic() - sent < self._resend_after:
            return
        event = new_event(type_, data, source=f"{self._settings.source}/watch", subject=data.volume_id, id_=id_)
        await self._send(event, data.cluster)
        self._sent[id_] = time.monotonic()
        metrics.WATCH_REQUESTS.labels(kind).inc()
        log.info("sent %s request %s for %s", kind, id_, "/".join(parts))
