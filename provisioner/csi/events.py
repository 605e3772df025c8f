"""A Warning event ``MountFailed`` on the claim whose volume did not mount, naming the server that refused.

NodeStageVolume knows only the volume id (kubelet passes no pod there), so the claim is found the
way ``kubectl`` would: the PV whose ``spec.csi`` names this driver and volume handle, then its
``claimRef``. The event goes on the claim because that is where users look (``kubectl describe
pvc``) and because one claim's event covers every pod that waits for it. Kubelet already puts its
own event on the pod ("MountVolume.MountDevice failed ..."), which names neither reason nor server.

Repeats do not flood the API: a failure with the same (volume, reason, server) within
``REPEAT_WINDOW`` seconds raises the existing event's ``count`` instead of creating a new event, as
kubelet's own recorder does. Every Kubernetes call sits behind the small ``Cluster`` Protocol; unit
tests use a fake, ``KubernetesCluster`` is the kubernetes_asyncio one. With events off (the default)
``MountEvents`` only logs.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from provisioner.csi.failures import Failure

log = logging.getLogger(__name__)
REASON = "MountFailed"
REPEAT_WINDOW = 600.0
MAX_MESSAGE = 1024


@dataclass(frozen=True, slots=True)
class ClaimRef:
    namespace: str
    name: str
    uid: str


@dataclass(frozen=True, slots=True)
class PodRef:
    namespace: str
    name: str


class Cluster(Protocol):
    async def claim_of(self, driver: str, volume_id: str) -> ClaimRef | None:
        """The claim bound to the PV of this driver and volume handle, None if there is none."""
        ...

    async def create_event(self, namespace: str, body: dict[str, Any]) -> str:
        """Create a core/v1 Event; returns its name."""
        ...

    async def bump_event(self, namespace: str, name: str, *, count: int, last: str, message: str) -> None:
        """Raise an existing event's count and lastTimestamp."""
        ...

    async def node_label(self, node: str, key: str) -> str | None: ...


@dataclass
class _Posted:
    namespace: str
    name: str
    count: int
    at: float


class MountEvents:
    """Reports mount failures: always to the log, and to the claim when a Cluster is configured."""

    def __init__(
        self,
        cluster: Cluster | None,
        *,
        driver: str,
        node_id: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cluster = cluster
        self._driver = driver
        self._node = node_id
        self._clock = clock
        self._posted: dict[tuple[str, str, str | None], _Posted] = {}

    def message(self, volume_id: str, volume: str, failure: Failure, pod: PodRef | None) -> str:
        where = f" for pod {pod.namespace}/{pod.name}" if pod else ""
        text = (
            f"mounting gluster volume {volume} (volume id {volume_id}) on node {self._node}{where} failed: "
            f"{failure.describe()} [{failure.reason}]"
        )
        if failure.detail:
            text += f"; glusterfs client: {failure.detail}"
        return text[:MAX_MESSAGE]

    async def mount_failed(self, volume_id: str, volume: str, failure: Failure, *, pod: PodRef | None = None) -> None:
        text = self.message(volume_id, volume, failure, pod)
        log.warning("%s", text)
        if self._cluster is None:
            return
        try:
            await self._post(volume_id, failure, text)
        except Exception as e:  # noqa: BLE001 -- an event is a courtesy: its failure never changes the CSI answer
            log.warning("could not post the MountFailed event of volume %s: %s: %s", volume_id, type(e).__name__, e)

    async def _post(self, volume_id: str, failure: Failure, text: str) -> None:
        assert self._cluster is not None
        key = (volume_id, failure.reason, failure.server)
        now = self._clock()
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        previous = self._posted.get(key)
        if previous is not None and now - previous.at < REPEAT_WINDOW:
            previous.count += 1
            previous.at = now
            await self._cluster.bump_event(
                previous.namespace, previous.name, count=previous.count, last=stamp, message=text
            )
            return
        claim = await self._cluster.claim_of(self._driver, volume_id)
        if claim is None:
            log.info("no claim found for volume %s: the MountFailed event is only logged", volume_id)
            return
        body = claim_event(claim, message=text, component=self._driver, node=self._node, now=stamp)
        name = await self._cluster.create_event(claim.namespace, body)
        self._posted[key] = _Posted(claim.namespace, name, 1, now)


def claim_event(claim: ClaimRef, *, message: str, component: str, node: str, now: str) -> dict[str, Any]:
    """A core/v1 Event on the claim, as ``kubectl describe pvc`` shows it (pure)."""
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{claim.name[:220]}.{secrets.token_hex(8)}", "namespace": claim.namespace},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "namespace": claim.namespace,
            "name": claim.name,
            "uid": claim.uid,
        },
        "reason": REASON,
        "message": message[:MAX_MESSAGE],
        "type": "Warning",
        "source": {"component": component, "host": node},
        "reportingComponent": component,
        "reportingInstance": node,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


class KubernetesCluster:
    """``Cluster`` over kubernetes_asyncio (imported only when events are on)."""

    def __init__(self, api: Any, *, timeout: float) -> None:
        self._api = api
        self._timeout = timeout

    @classmethod
    async def connect(cls, kubeconfig: str | None, *, timeout: float) -> KubernetesCluster:
        from kubernetes_asyncio import client, config

        if kubeconfig is not None:
            api = await config.new_client_from_config(config_file=kubeconfig, persist_config=False)
        else:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            api = client.ApiClient(configuration)
        return cls(api, timeout=timeout)

    async def close(self) -> None:
        await self._api.close()

    def _core(self) -> Any:
        from kubernetes_asyncio import client

        return client.CoreV1Api(self._api)

    async def claim_of(self, driver: str, volume_id: str) -> ClaimRef | None:
        core = self._core()
        token: str | None = None
        while True:
            page = await core.list_persistent_volume(limit=500, _continue=token, _request_timeout=self._timeout)
            for pv in page.items:
                source = pv.spec.csi if pv.spec else None
                ref = pv.spec.claim_ref if pv.spec else None
                if source and source.driver == driver and source.volume_handle == volume_id and ref:
                    return ClaimRef(namespace=ref.namespace, name=ref.name, uid=ref.uid or "")
            token = page.metadata._continue if page.metadata else None
            if not token:
                return None

    async def create_event(self, namespace: str, body: dict[str, Any]) -> str:
        created = await self._core().create_namespaced_event(namespace, body, _request_timeout=self._timeout)
        return str(created.metadata.name)

    async def bump_event(self, namespace: str, name: str, *, count: int, last: str, message: str) -> None:
        patch = {"count": count, "lastTimestamp": last, "message": message}
        await self._core().patch_namespaced_event(name, namespace, patch, _request_timeout=self._timeout)

    async def node_label(self, node: str, key: str) -> str | None:
        found = await self._core().read_node(node, _request_timeout=self._timeout)
        labels = (found.metadata.labels if found.metadata else None) or {}
        value = labels.get(key)
        return str(value) if value else None
