"""Prometheus metrics of the daemon: names in base units, bounded label sets.

Labels never carry volume, claim or request names (unbounded); they carry request kinds, outcome,
reason codes, step names, cluster ids, node hosts, device names and command names, all of which
are small sets. The label values of a closed vocabulary (request kinds, steps, dead-letter and
retry reasons, drift kinds) are created at zero when this module loads: a series that appears
with its first event already counted hides that event from ``rate()`` and ``increase()``, and a
dashboard would show "no data" instead of 0.

Capacity and object counts are not here: ``provisioner.capacity`` computes them from the desired
state at scrape time. Consumer lag is a gauge set by the readiness checks (``provisioner.http``)
and node reachability one set by the node prober (``provisioner.health``), both every few seconds.
The full list, with units, is in ``grafana/README.md``.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram, Info, disable_created_metrics

from provisioner import __version__, errors
from provisioner.events.catalog import REQUEST_KINDS

disable_created_metrics()  # type: ignore[no-untyped-call]  # the *_created series double the output and no dashboard reads them

# Buckets in seconds. Requests span a topology load (milliseconds) to a large volume (minutes);
# steps include the allocator (microseconds); a node command is an SSH round trip at the least.
REQUEST_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
STEP_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
COMMAND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

STEPS = (
    "allocate",  # the pure allocator
    "brick_create",  # brick filesystems on the nodes (in parallel across nodes)
    "gluster_create",  # gluster volume create, options, start
    "gluster_start",
    "gluster_stop",
    "gluster_delete",  # gluster volume stop + delete and the bricks' removal
    "gluster_expand",  # new bricks, add-brick and rebalance start
    "rollback",  # undoing a failed create
    "kubernetes",  # PV, Endpoints, Service, claim annotations
)
"""The ``step`` label values: a closed vocabulary, so dashboards and alerts can name them.
``gluster_create`` spans create, options and start, and ``gluster_start`` is the start inside it;
``gluster_delete`` spans stop, delete and brick removal, and ``gluster_stop`` the stop inside it;
``kubernetes`` is for the PV/claim work."""

DEAD_LETTER_REASONS = (
    "EmptyEvent",
    "EventTooLarge",
    "MalformedJson",
    "InvalidEnvelope",
    "UnknownType",
    "InvalidData",
    "KeyMismatch",
    "Unreadable",  # the decoder itself failed on the bytes (a bug, or an input no parser should see)
    "HandlerCrashed",
    "ResultTooLarge",  # the result could not be encoded within the record limit (a bug)
    "CommitFailed",  # the record's transaction failed again and again; parked instead of blocking
)
"""Why an input went to the dead-letter topic (the ``dlq_reason`` header)."""

FAILURE_REASONS = errors.REASONS
"""The ``reason`` codes of failed results: one per class of ``provisioner.errors``."""

RETRY_REASONS = (*errors.reasons_of(errors.TemporaryError), "Internal")
"""Why a step was tried again: a temporary error's reason, or Internal for an unexpected exception."""
WATCH_KINDS = ("provision", "delete", "expand")
WATCH_RESOURCES = ("persistentvolumeclaims", "persistentvolumes")
WATCH_RELIST_REASONS = ("resync", "gone", "error")
DRIFT_KINDS = (
    "orphan_brick",  # a brick of ours on a node that no volume record names
    "orphan_volume",  # a gluster volume carrying our id without a record
    "missing_brick",  # a recorded brick that is not on its node
    "missing_volume",  # a recorded online volume that gluster does not have
    "missing_device",  # an lvm device whose VG is not on its node (a disk gone), with the bricks it held
    "interrupted",  # a record stuck in creating/deleting with no request working on it
)

BUILD = Info("provisioner_build", "Version of the running provisioner (value 1).")
BUILD.info({"version": __version__, "python": platform.python_version()})

REQUESTS_RECEIVED = Counter(
    "provisioner_requests_received", "Requests decoded and validated from the requests topic.", ["type"]
)
REQUESTS_DONE = Counter(
    "provisioner_requests_completed",
    "Requests answered with a terminal result; reason is the failure reason code, empty on success.",
    ["type", "outcome", "reason"],
)
REQUEST_SECONDS = Histogram(
    "provisioner_request_duration_seconds",
    "Time from taking a request to its outcome, retries included.",
    ["type"],
    buckets=REQUEST_BUCKETS,
)
STEP_SECONDS = Histogram(
    "provisioner_step_duration_seconds",
    "Time of one step of a request (see provisioner.metrics.STEPS).",
    ["step"],
    buckets=STEP_BUCKETS,
)
NODE_COMMAND_SECONDS = Histogram(
    "provisioner_node_command_duration_seconds",
    "Time of one command on a storage node, over SSH; command 'gluster_pool_list' is the health probe.",
    ["command", "node"],
    buckets=COMMAND_BUCKETS,
)
NODE_COMMAND_FAILURES = Counter(
    "provisioner_node_command_failures",
    "Node commands that failed (kind 'exit') or could not run (kind = the error reason).",
    ["command", "node", "kind"],
)
NODE_UP = Gauge(
    "provisioner_node_up",
    "1 when the storage node is up (sshd and glusterd answer the health probe), 0 when it is down.",
    ["cluster", "node"],
)
RETRIES = Counter("provisioner_retries", "Retried attempts after a temporary failure.", ["reason"])
DEAD_LETTERS = Counter("provisioner_dead_letters", "Events sent to the dead-letter topic.", ["reason"])
IN_FLIGHT = Gauge("provisioner_requests_in_flight", "Requests being worked on now.")
CONSUMER_LAG = Gauge(
    "provisioner_consumer_lag_records",
    "Records of an assigned input partition not yet consumed (end offset minus position).",
    ["topic", "partition"],
)
READY = Gauge("provisioner_ready", "1 when every readiness check passes (what /readyz answers).")
READY_CHECK = Gauge("provisioner_ready_check", "1 when the readiness check passed at its last run.", ["check"])
DRIFT_FOUND = Counter(
    "provisioner_reconcile_drift_found", "Differences between desired and actual state found.", ["kind"]
)
DRIFT_REPAIRED = Counter("provisioner_reconcile_drift_repaired", "Differences the reconciler repaired.", ["kind"])
WATCH_REQUESTS = Counter(
    "provisioner_watch_requests_sent", "Requests the watcher sent for claims and volumes.", ["kind"]
)
WATCH_CLAIMS_REFUSED = Counter(
    "provisioner_watch_claims_refused", "Claims the watcher could not turn into a request (reason on the claim)."
)
WATCH_RELISTS = Counter(
    "provisioner_watch_relists",
    "Full relists by the watcher, by cause (resync, gone = 410, error).",
    ["resource", "reason"],
)
WATCH_LEADER = Gauge("provisioner_watch_leader", "1 while this watcher holds the Lease and acts.")

for _kind in sorted(set(REQUEST_KINDS.values())):
    REQUESTS_RECEIVED.labels(_kind)
    REQUESTS_DONE.labels(_kind, "succeeded", "")
    REQUEST_SECONDS.labels(_kind)
    for _reason in FAILURE_REASONS:
        REQUESTS_DONE.labels(_kind, "failed", _reason)
for _step in STEPS:
    STEP_SECONDS.labels(_step)
for _reason in DEAD_LETTER_REASONS:
    DEAD_LETTERS.labels(_reason)
for _reason in RETRY_REASONS:
    RETRIES.labels(_reason)
for _kind in DRIFT_KINDS:
    DRIFT_FOUND.labels(_kind)
    DRIFT_REPAIRED.labels(_kind)
for _kind in WATCH_KINDS:
    WATCH_REQUESTS.labels(_kind)
for _resource in WATCH_RESOURCES:
    for _reason in WATCH_RELIST_REASONS:
        WATCH_RELISTS.labels(_resource, _reason)


@contextmanager
def step(name: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        STEP_SECONDS.labels(name).observe(time.monotonic() - started)


def set_consumer_lag(topic: str, lag: Mapping[int, int]) -> None:
    """Replace the lag series with the currently assigned partitions (a revoked one disappears)."""
    CONSUMER_LAG.clear()
    for partition, records in lag.items():
        CONSUMER_LAG.labels(topic, str(partition)).set(records)


def set_node_up(up: Mapping[tuple[str, str], bool]) -> None:
    """Replace the reachability series with the nodes of the current topology, keyed (cluster, host)."""
    NODE_UP.clear()
    for (cluster, node), ok in up.items():
        NODE_UP.labels(cluster, node).set(1 if ok else 0)


def set_ready(checks: Mapping[str, bool]) -> None:
    for name, ok in checks.items():
        READY_CHECK.labels(name).set(1 if ok else 0)
    READY.set(1 if checks and all(checks.values()) else 0)
