"""Prometheus metrics of the node plugin, served on its optional HTTP port (``/metrics``).

* ``provisioner_csi_operation_seconds{operation,step}`` -- histogram. ``step="total"`` is the whole
  CSI call; the other steps are the commands inside it: ``mount`` (the FUSE mount), ``bind``,
  ``remount_ro``, ``unmount``, ``stale_unmount`` (the lazy unmount of a dead client's mount) and
  ``statfs``. A slow NodeStage shows up as a slow ``mount`` step, a slow storage server as a slow
  ``statfs``.
* ``provisioner_csi_mount_failures{reason}`` -- counter; ``reason`` is one of
  ``provisioner.csi.failures.REASONS`` (bounded), so an alert can tell "server down" from
  "volume deleted".
* ``provisioner_csi_operations{operation,code}`` -- counter; ``code`` is the gRPC status name.
* ``provisioner_csi_stale_mounts_repaired`` -- counter of stale mounts found and remounted.

Labels carry RPC names, steps, codes and reasons only, never a volume or pod name. The closed
vocabularies are created at zero when the module loads, so ``rate()`` sees the first event. The
volume-level ``kubelet_volume_stats_*`` series come from kubelet, fed by NodeGetVolumeStats.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
from prometheus_client import Counter, Histogram

from provisioner.csi.failures import REASONS

OPERATIONS = (
    "NodeStageVolume",
    "NodeUnstageVolume",
    "NodePublishVolume",
    "NodeUnpublishVolume",
    "NodeGetVolumeStats",
    "NodeExpandVolume",
    "NodeGetVolumeHealth",
    "NodeGetStorageHealth",
    "NodeGetCapabilities",
    "NodeGetInfo",
    "GetPluginInfo",
    "GetPluginCapabilities",
    "Probe",
)
STEPS = ("total", "mount", "bind", "remount_ro", "unmount", "stale_unmount", "statfs")
_STEPS_OF = {
    "NodeStageVolume": ("total", "mount", "stale_unmount"),
    "NodeUnstageVolume": ("total", "unmount", "stale_unmount"),
    "NodePublishVolume": ("total", "mount", "bind", "remount_ro", "unmount", "stale_unmount"),
    "NodeUnpublishVolume": ("total", "unmount", "stale_unmount"),
    "NodeGetVolumeStats": ("total", "statfs"),
    "NodeExpandVolume": ("total", "statfs"),
}
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

OPERATION_SECONDS = Histogram(
    "provisioner_csi_operation_seconds",
    "Seconds a CSI call (step=total) or a command inside it took on this node.",
    ["operation", "step"],
    buckets=BUCKETS,
)
MOUNT_FAILURES = Counter(
    "provisioner_csi_mount_failures",
    "FUSE mounts of gluster volumes that failed, by reason (provisioner.csi.failures.REASONS).",
    ["reason"],
)
OPERATIONS_TOTAL = Counter(
    "provisioner_csi_operations",
    "CSI calls answered, by RPC and gRPC status code.",
    ["operation", "code"],
)
STALE_REPAIRED = Counter(
    "provisioner_csi_stale_mounts_repaired",
    "Stale FUSE mounts (Transport endpoint is not connected) found and unmounted for a remount.",
)

for _operation, _steps in _STEPS_OF.items():
    for _step in _steps:
        OPERATION_SECONDS.labels(_operation, _step)
for _reason in REASONS:
    MOUNT_FAILURES.labels(_reason)
for _operation in OPERATIONS:
    OPERATIONS_TOTAL.labels(_operation, grpc.StatusCode.OK.name)


@contextmanager
def timed(operation: str, step: str) -> Iterator[None]:
    """Observe the seconds the block takes, whether it succeeds or raises."""
    start = time.perf_counter()
    try:
        yield
    finally:
        OPERATION_SECONDS.labels(operation, step).observe(time.perf_counter() - start)


def answered(operation: str, code: grpc.StatusCode) -> None:
    OPERATIONS_TOTAL.labels(operation, code.name).inc()


def mount_failed(reason: str) -> None:
    MOUNT_FAILURES.labels(reason if reason in REASONS else "Other").inc()


def stale_repaired() -> None:
    STALE_REPAIRED.inc()
