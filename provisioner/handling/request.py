"""What every request shares while it is handled: its event, its intent writer and retry budgets
(``Request``), and the means of the storage operations of a daemon (``Storage``).

``Storage`` holds the desired state, the node operations, placement and the per-cluster placement
locks: each plan must see the space the previous one took, so volume requests, topology changes and
evacuation plan under the same lock of their cluster.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from provisioner import metrics
from provisioner.delivery.outcome import IntentWriter
from provisioner.domain import Cluster, ClusterId, Volume
from provisioner.events.envelope import Event
from provisioner.handling.kubernetes import KubernetesObjects
from provisioner.handling.retry import Retrying
from provisioner.planning.allocator import Limits
from provisioner.planning.placement import Placement
from provisioner.state import DesiredState, StateChange
from provisioner.storage.operations import VolumeOperations


@dataclass(frozen=True, slots=True)
class Request:
    """What every step of one request shares."""

    event: Event
    intent: IntentWriter
    retrying: Retrying  # bound to the request's deadline
    rollback: Retrying  # a budget of its own: undoing must not be cut short by the deadline that failed us
    source: str


@dataclass(slots=True)
class Storage:
    state: DesiredState
    ops: VolumeOperations
    placement: Placement
    limits: Limits
    objects: KubernetesObjects | None
    locks: dict[ClusterId, asyncio.Lock] = field(default_factory=dict)

    def lock(self, cluster: ClusterId) -> asyncio.Lock:
        """The cluster's placement lock."""
        return self.locks.setdefault(cluster, asyncio.Lock())

    async def record(self, request: Request, volume: Volume) -> None:
        """Durably record ``volume`` before any node work on it."""
        await request.retrying(
            lambda: request.intent.record([StateChange.put_volume(volume)]), what=f"record {volume.name}"
        )

    async def remove(self, retrying: Retrying, cluster: Cluster, volume: Volume) -> bool:
        """The gluster volume and its bricks, as one retried step."""

        async def remove() -> bool:
            with metrics.step("gluster_delete"):
                return await self.ops.remove(cluster, volume)

        return await retrying(remove, what=f"remove {volume.name}")
