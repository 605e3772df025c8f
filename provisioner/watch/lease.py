"""One watcher acts at a time: a coordination.k8s.io/v1 Lease, as client-go's leader election does it.

The holder renews the Lease every third of its duration; another candidate takes it over only once
it has gone unrenewed for the whole duration. Every write carries the resourceVersion it read, so
two candidates racing for an expired Lease cannot both win (the loser gets 409 Conflict). A holder
that cannot renew within two thirds of the duration stops acting before anyone else may start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client

from provisioner.kube.api import api_error, as_body

log = logging.getLogger(__name__)


def _micro_time(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderLease:
    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        duration: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._api = client.CoordinationV1Api(api)
        self._namespace = namespace
        self._name = name
        self.identity = identity
        self._duration = duration
        self._clock = clock
        self.leading = asyncio.Event()
        self.lost = asyncio.Event()

    def _body(self, resource_version: str | None, *, acquired: str, transitions: int) -> dict[str, Any]:
        now = _micro_time(self._clock())
        metadata: dict[str, Any] = {"name": self._name, "namespace": self._namespace}
        if resource_version:
            metadata["resourceVersion"] = resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": max(1, round(self._duration)),
                "acquireTime": acquired or now,
                "renewTime": now,
                "leaseTransitions": transitions,
            },
        }

    async def try_acquire(self) -> bool:
        """Take or renew the Lease; False when someone else holds it (or won a race for it)."""
        try:
            lease = await self._api.read_namespaced_lease(self._name, self._namespace)
        except client.ApiException as e:
            if e.status != 404:
                raise api_error(e, f"read Lease {self._namespace}/{self._name}") from e
            return await self._write(None, acquired="", transitions=0)
        spec = lease.spec
        holder = spec.holder_identity if spec else None
        transitions = (spec.lease_transitions or 0) if spec else 0
        rv = lease.metadata.resource_version
        if holder == self.identity:
            acquired = _micro_time(spec.acquire_time) if spec.acquire_time else ""
            return await self._write(rv, acquired=acquired, transitions=transitions)
        renewed = spec.renew_time if spec else None
        duration = (spec.lease_duration_seconds or self._duration) if spec else self._duration
        if holder and renewed is not None and (self._clock() - renewed).total_seconds() < duration:
            return False
        log.info("Lease %s/%s: taking over from %s", self._namespace, self._name, holder or "nobody")
        return await self._write(rv, acquired="", transitions=transitions + 1)

    async def _write(self, resource_version: str | None, *, acquired: str, transitions: int) -> bool:
        body = self._body(resource_version, acquired=acquired, transitions=transitions)
        try:
            if resource_version is None:
                await self._api.create_namespaced_lease(self._namespace, as_body(body))
            else:
                await self._api.replace_namespaced_lease(self._name, self._namespace, as_body(body))
        except client.ApiException as e:
            if e.status == 409:
                return False  # another candidate wrote first
            raise api_error(e, f"write Lease {self._namespace}/{self._name}") from e
        return True

    async def hold(self) -> None:
        """Campaign and renew forever; ``leading`` is set while this candidate may act."""
        last_renewal = 0.0
        while True:
            try:
                ok = await self.try_acquire()
            except Exception as e:  # noqa: BLE001 - an unreachable API server must not end the campaign
                log.warning("Lease %s/%s: %s", self._namespace, self._name, e)
                ok = False
            now = time.monotonic()
            if ok:
                last_renewal = now
                if not self.leading.is_set():
                    log.info("Lease %s/%s: leading as %s", self._namespace, self._name, self.identity)
                    self.lost.clear()
                    self.leading.set()
            elif self.leading.is_set() and now - last_renewal > self._duration * 2 / 3:
                log.warning("Lease %s/%s: lost; stopping work", self._namespace, self._name)
                self.leading.clear()
                self.lost.set()
            await asyncio.sleep(self._duration / 3 if self.leading.is_set() else self._duration / 5)

    async def release(self) -> None:
        """Give the Lease up at a clean stop, so a standby takes over at once instead of after a timeout."""
        if not self.leading.is_set():
            return
        try:
            lease = await self._api.read_namespaced_lease(self._name, self._namespace)
            if lease.spec and lease.spec.holder_identity == self.identity:
                body = self._body(
                    lease.metadata.resource_version, acquired="", transitions=lease.spec.lease_transitions or 0
                )
                body["spec"]["holderIdentity"] = None
                body["spec"]["leaseDurationSeconds"] = 1
                await self._api.replace_namespaced_lease(self._name, self._namespace, as_body(body))
        except Exception as e:  # noqa: BLE001 - best effort: the Lease expires anyway
            log.warning("Lease %s/%s: not released: %s", self._namespace, self._name, e)
        self.leading.clear()
