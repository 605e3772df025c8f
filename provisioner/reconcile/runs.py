"""Reconcile runs: ``provisioner reconcile`` (everything, on demand) and the daemon's periodic pass.

Order matters and is the same in both: the nodes are read *first*, desired state is read (or caught
up) *after*, so whatever the nodes show was already recorded if it is ours (the daemon records
intent before node work). Repairs: orphans are removed on the nodes (re-checked just before);
a stale interrupted record gets the request that finishes or rolls it back, sent through Kafka so
that the daemon owning the cluster does it in order with everything else on that volume.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from provisioner import metrics
from provisioner.bus import client
from provisioner.bus.state_topic import StateTopicReader
from provisioner.domain import Cluster, Volume, VolumeId, VolumeStatus
from provisioner.errors import ProvisionerError, UnknownCluster
from provisioner.events import catalog, models
from provisioner.events.envelope import Event, new_event
from provisioner.executor.ssh import ssh_executor
from provisioner.planning.placement import ObservedSpace
from provisioner.reconcile.drift import Drift, Inventory, find_drift
from provisioner.reconcile.inventory import NodeInventory
from provisioner.settings import Settings
from provisioner.state import VOLUME_PREFIX, DesiredState
from provisioner.storage.operations import VolumeOperations

log = logging.getLogger(__name__)
ORPHANS = ("orphan_volume", "orphan_brick")


@dataclass
class Report:
    drift: list[Drift] = field(default_factory=list)
    repaired: list[Drift] = field(default_factory=list)
    failed: list[tuple[Drift, str]] = field(default_factory=list)
    unread: list[str] = field(default_factory=list)  # what could not be read, so was not judged

    @property
    def clean(self) -> bool:
        """Nothing left, and every node read: only then is "no drift" a verdict."""
        return not self.left and not self.unread

    @property
    def left(self) -> list[Drift]:
        """Drift still there after this run (everything found, minus what was repaired)."""
        fixed = {id(d) for d in self.repaired}
        return [d for d in self.drift if id(d) not in fixed]


async def reconcile(
    settings: Settings,
    *,
    cluster: str | None = None,
    repair: bool = False,
    stale_after: float = 900.0,
    now: Callable[[], float] = time.time,
) -> Report:
    """Compare every cluster (or one) with its nodes; with ``repair``, remove orphans and resend the
    requests of records interrupted more than ``stale_after`` seconds ago."""
    state = DesiredState()
    reader = StateTopicReader(settings.kafka, state, keep_times=True)
    executor = ssh_executor(settings)
    report = Report()
    await reader.start()
    try:
        await reader.catch_up()
        clusters = [c for c in state.clusters.values() if cluster in (None, c.id)]
        if cluster is not None and not clusters:
            raise UnknownCluster(f"cluster {cluster} has no topology in {settings.kafka.state_topic}")
        operations = VolumeOperations(executor, settings.storage, owner=settings.kafka.state_topic)
        inventory = NodeInventory(executor, operations, timeout=settings.storage.command_timeout)
        taken = [(c, await inventory.take(c)) for c in clusters]
        await reader.catch_up()  # after the nodes were read: anything of ours there is recorded by now
        times = reader.times or {}

        def stale(volume: Volume) -> bool:
            stamp = times.get(VOLUME_PREFIX + volume.id)
            return stamp is not None and now() - stamp / 1000 > stale_after

        for topology, found in taken:
            report.unread += [f"cluster {topology.id}: node {host} could not be read" for host in found.unreachable]
            if found.volumes is None:
                report.unread.append(f"cluster {topology.id}: no node answered gluster volume info")
            drift = find_drift(topology, state.volumes.values(), found, operations.owner, stale=stale)
            report.drift += drift
            if repair:
                for item in drift:
                    if item.repairable:
                        await _repair(settings, inventory, topology, state, item, report)
    finally:
        await reader.stop()
        await executor.close()
    return report


async def _repair(
    settings: Settings, inventory: NodeInventory, cluster: Cluster, state: DesiredState, item: Drift, report: Report
) -> None:
    try:
        if item.kind in ORPHANS:
            await inventory.repair(cluster, item)
        elif item.kind == "interrupted":
            volume = state.volumes.get(VolumeId(item.volume_id or ""))
            if volume is None:
                return
            await client.publish(settings.kafka, _finishing_request(volume), key=volume.cluster)
        else:
            return
    except ProvisionerError as e:
        report.failed.append((item, str(e)))
        return
    report.repaired.append(item)


def _finishing_request(volume: Volume) -> Event:
    """The request that ends an interrupted record: a create or delete is rolled back / finished by a
    delete, an expansion is resumed by an expand to the recorded size."""
    source = "/gluster-provisioner/reconcile"
    if volume.status is VolumeStatus.EXPANDING:
        expand = models.ExpandVolume(cluster=volume.cluster, size=volume.size, volume_id=volume.id)
        return new_event(catalog.EXPAND_REQUESTED, expand, source=source, subject=volume.id)
    delete = models.DeleteVolume(cluster=volume.cluster, volume_id=volume.id)
    return new_event(catalog.DELETE_REQUESTED, delete, source=source, subject=volume.id)


class PeriodicReconciler:
    """The daemon's pass: orphans only (missing and interrupted volumes are normal while requests run),
    counted in ``provisioner_reconcile_drift_*``, removed when ``worker.reconcile_repair`` is on; it
    also refreshes the devices' observed room (``planning.placement.ObservedSpace``) that placement trusts.

    Only the clusters whose request partition this replica holds are judged: another replica's
    clusters change under it unseen, and their new volumes would look like orphans. For each, the
    nodes are read first and the state caught up after (``catch_up``), and ownership is asked again
    before every repair, so a cluster that moved meanwhile is left to its new owner."""

    def __init__(
        self,
        state: DesiredState,
        inventory: NodeInventory,
        *,
        owner: str,
        repair: bool,
        owns: Callable[[str], bool],
        catch_up: Callable[[], Awaitable[int]],
        observed: ObservedSpace | None = None,
    ) -> None:
        self._state = state
        self._inventory = inventory
        self._observed = observed
        self._kicked = asyncio.Event()
        self._owner = owner
        self._repair = repair
        self._owns = owns
        self._catch_up = catch_up

    async def run_once(self) -> list[Drift]:
        found: list[Drift] = []
        for cluster in list(self._state.clusters.values()):
            if not self._owns(cluster.id):
                continue
            taken = await self._inventory.take(cluster)
            await self._catch_up()  # after the nodes were read: anything of ours there is in state by now
            if not self._owns(cluster.id):
                continue
            if self._observed is not None:
                self._observed.update(taken.space, self._state.usage(cluster.id))
            drift = self._orphans(cluster, taken)
            if drift:
                drift = await self._confirmed(cluster, drift)
            for item in drift:
                metrics.DRIFT_FOUND.labels(item.kind).inc()
                log.warning("drift: %s %s: %s", item.kind, item.subject, item.detail)
                if self._repair:
                    await self._repair_one(cluster, item)
            found += drift
        return found

    def _orphans(self, cluster: Cluster, taken: Inventory) -> list[Drift]:
        every = find_drift(cluster, self._state.volumes.values(), taken, self._owner)
        return [d for d in every if d.kind in ORPHANS]

    async def _confirmed(self, cluster: Cluster, drift: list[Drift]) -> list[Drift]:
        """What a second read of the nodes, against state caught up after it, still calls orphans.

        A delete in flight removes its bricks, then its record: a read of the nodes taken before the
        bricks went, judged against state caught up after the record went, shows orphans that are
        already gone. They are not drift, and counting them would page someone."""
        again = await self._inventory.take(cluster)
        await self._catch_up()
        still = {(d.kind, d.subject) for d in self._orphans(cluster, again)}
        return [d for d in drift if (d.kind, d.subject) in still]

    async def _repair_one(self, cluster: Cluster, item: Drift) -> None:
        if not self._owns(cluster.id):
            log.info("drift %s %s left to the new owner of cluster %s", item.kind, item.subject, cluster.id)
            return
        try:
            await self._inventory.repair(cluster, item)
        except ProvisionerError as e:
            log.error("drift %s %s not repaired: %s", item.kind, item.subject, e)
            return
        metrics.DRIFT_REPAIRED.labels(item.kind).inc()

    def kick(self) -> None:
        """Ask for a pass now (the daemon calls it when it is assigned partitions)."""
        self._kicked.set()

    async def every(self, interval: float) -> None:
        """Run a pass now, then every ``interval`` seconds or at a kick; a failed pass is logged, never fatal."""
        while True:
            self._kicked.clear()
            try:
                await self.run_once()
            except Exception:  # the daemon must outlive a bad pass
                log.exception("reconcile pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kicked.wait(), interval)
