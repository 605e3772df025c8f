"""Prometheus metrics of the daemon: names in base units, bounded label sets.

Labels never carry volume, claim or request names (unbounded); they carry request kinds, outcome,
reason codes, step names, node hosts and command names, all of which are small sets.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram, Info, disable_created_metrics

from provisioner import __version__

disable_created_metrics()  # type: ignore[no-untyped-call]  # the *_created series double the output and no dashboard reads them

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

BUILD = Info("provisioner_build", "Version of the running provisioner.")
BUILD.info({"version": __version__})

REQUESTS_RECEIVED = Counter("provisioner_requests_received", "Requests decoded from the requests topic.", ["type"])
REQUESTS_DONE = Counter(
    "provisioner_requests_completed",
    "Requests answered with a terminal result.",
    ["type", "outcome", "reason"],
)
REQUEST_SECONDS = Histogram(
    "provisioner_request_duration_seconds",
    "Time from taking a request to its outcome.",
    ["type"],
    buckets=LATENCY_BUCKETS,
)
STEP_SECONDS = Histogram(
    "provisioner_step_duration_seconds", "Time of one step of a request.", ["step"], buckets=LATENCY_BUCKETS
)
NODE_COMMAND_SECONDS = Histogram(
    "provisioner_node_command_duration_seconds",
    "Time of one command on a storage node.",
    ["command", "node"],
    buckets=LATENCY_BUCKETS,
)
NODE_COMMAND_FAILURES = Counter(
    "provisioner_node_command_failures",
    "Node commands that failed or could not run.",
    ["command", "node", "kind"],
)
RETRIES = Counter("provisioner_retries", "Retried attempts after a temporary failure.", ["reason"])
DEAD_LETTERS = Counter("provisioner_dead_letters", "Events sent to the dead-letter topic.", ["reason"])
IN_FLIGHT = Gauge("provisioner_requests_in_flight", "Requests being worked on now.")
READY = Gauge("provisioner_ready", "1 when the daemon is connected to Kafka and has rebuilt its state.")


@contextmanager
def step(name: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        STEP_SECONDS.labels(name).observe(time.monotonic() - started)
