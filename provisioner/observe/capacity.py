"""Capacity and object counts, computed from the desired state when Prometheus scrapes.

A collector rather than gauges kept up to date: there is nothing to forget to update, a device that
leaves the topology leaves the output at the next scrape, and a scrape costs one pass over the
topology and the volumes. ``used`` is the sum of the sizes of the bricks placed on a device, which
is exactly what the allocator counts as taken; it is not what the filesystem reports (thin and
sparse bricks use less until written).

Series, all gauges (``node`` is the manage host, as in the node command metrics):

* ``provisioner_device_capacity_bytes{cluster,node,device}``, ``..._used_bytes``, ``..._free_bytes``:
  per device; sum by ``cluster`` or ``node`` for the totals (``deploy/prometheus/rules.yml`` records them).
* ``provisioner_volumes{cluster,status}`` and ``provisioner_bricks{cluster}``.
* ``provisioner_device_observed_size_bytes`` / ``..._observed_free_bytes{cluster,node,device}``: the
  device's room as its node last reported it (statfs of a file device's filesystem, ``vgs`` of an
  lvm device's VG), from the reconcile passes; absent until a pass has read the node.

The collector reads ``DesiredState`` without a lock: it must be called on the event loop thread that
mutates the state, which is what the aiohttp ``/metrics`` handler does. It does not talk to nodes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

from provisioner.domain import VolumeStatus
from provisioner.planning.placement import ObservedSpace
from provisioner.state import DesiredState

DEVICE_LABELS = ("cluster", "node", "device")


class CapacityCollector:
    def __init__(self, state: DesiredState, observed: ObservedSpace | None = None) -> None:
        self._state = state
        self._observed = observed or ObservedSpace()

    @classmethod
    def register(
        cls, state: DesiredState, registry: CollectorRegistry = REGISTRY, *, observed: ObservedSpace | None = None
    ) -> CapacityCollector:
        collector = cls(state, observed)
        registry.register(collector)
        return collector

    def unregister(self, registry: CollectorRegistry = REGISTRY) -> None:
        registry.unregister(self)

    def describe(self) -> list[Metric]:
        """The metric names without samples, so the registry can refuse a duplicate name."""
        return list(_families())

    def collect(self) -> Iterator[Metric]:
        capacity, used, free, volumes, bricks, observed_size, observed_free = _families()
        state = self._state
        for cluster_id in sorted(state.clusters):
            cluster = state.clusters[cluster_id]
            usage = state.usage(cluster_id)
            for node in cluster.nodes:
                for device in node.devices:
                    labels = [cluster_id, node.manage, device.name]
                    taken = usage.get(device.id, 0)
                    capacity.add_metric(labels, device.capacity)
                    used.add_metric(labels, taken)
                    free.add_metric(labels, max(device.capacity - taken, 0))
                    seen = self._observed.devices.get(device.id)
                    if seen is not None:
                        observed_size.add_metric(labels, seen.size)
                        observed_free.add_metric(labels, seen.free)
        per_status: Counter[tuple[str, str]] = Counter()
        per_cluster: Counter[str] = Counter()
        for volume in state.volumes.values():
            per_status[(volume.cluster, volume.status.value)] += 1
            per_cluster[volume.cluster] += len(volume.bricks)
        for name in sorted({*state.clusters, *per_cluster}):
            for status in VolumeStatus:
                volumes.add_metric([name, status.value], per_status[(name, status.value)])
            bricks.add_metric([name], per_cluster[name])
        yield from (capacity, used, free, volumes, bricks, observed_size, observed_free)


def _families() -> tuple[GaugeMetricFamily, ...]:
    return (
        GaugeMetricFamily(
            "provisioner_device_capacity_bytes", "Bytes a device offers for bricks (topology).", labels=DEVICE_LABELS
        ),
        GaugeMetricFamily(
            "provisioner_device_used_bytes", "Bytes of a device taken by placed bricks.", labels=DEVICE_LABELS
        ),
        GaugeMetricFamily(
            "provisioner_device_free_bytes", "Bytes of a device still free for new bricks.", labels=DEVICE_LABELS
        ),
        GaugeMetricFamily(
            "provisioner_volumes", "Volumes in the desired state, by status.", labels=("cluster", "status")
        ),
        GaugeMetricFamily("provisioner_bricks", "Bricks of the volumes in the desired state.", labels=("cluster",)),
        GaugeMetricFamily(
            "provisioner_device_observed_size_bytes",
            "Size of a device's filesystem (file) or VG (lvm) as its node last reported it.",
            labels=DEVICE_LABELS,
        ),
        GaugeMetricFamily(
            "provisioner_device_observed_free_bytes",
            "Free bytes of a device's filesystem (file) or VG (lvm) as its node last reported it.",
            labels=DEVICE_LABELS,
        ),
    )
