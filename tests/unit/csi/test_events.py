"""MountFailed events on the claim: found through the PV, bounded, counted up on repeats, never fatal."""

from __future__ import annotations

import logging

import pytest

from provisioner.csi.events import REPEAT_WINDOW, ClaimRef, MountEvents, PodRef, claim_event
from provisioner.csi.failures import Failure
from tests.unit.csi.conftest import FakeCluster
from tests.unit.csi.fakes import VOLUME_ID

CLAIM = ClaimRef("team-a", "data", "7c1a6a57-1d4f-4b8e-9a55-3f2b5d9b8c11")
REFUSED = Failure("ServerUnreachable", "10.77.0.11", "0-glusterfsd-mgmt: Exhausted all volfile servers")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def events(cluster: FakeCluster | None, clock: Clock | None = None) -> MountEvents:
    return MountEvents(cluster, driver="glusterfs.gluster.org", node_id="node-a", clock=clock or Clock())


async def test_event_goes_on_the_claim_of_the_volume() -> None:
    cluster = FakeCluster(claims={VOLUME_ID: CLAIM})
    await events(cluster).mount_failed(VOLUME_ID, "vol_a", REFUSED, pod=PodRef("team-a", "web-0"))
    [(namespace, body)] = cluster.created
    assert namespace == "team-a"
    assert body["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "namespace": "team-a",
        "name": "data",
        "uid": CLAIM.uid,
    }
    assert (body["type"], body["reason"], body["count"]) == ("Warning", "MountFailed", 1)
    message = body["message"]
    assert "vol_a" in message and VOLUME_ID in message and "node node-a" in message
    assert "storage server 10.77.0.11" in message and "[ServerUnreachable]" in message
    assert "pod team-a/web-0" in message
    assert body["source"] == {"component": "glusterfs.gluster.org", "host": "node-a"}


async def test_repeats_raise_the_count_until_the_window_passes() -> None:
    cluster = FakeCluster(claims={VOLUME_ID: CLAIM})
    clock = Clock()
    reporter = events(cluster, clock)
    for _ in range(3):
        await reporter.mount_failed(VOLUME_ID, "vol_a", REFUSED)
        clock.now += 30
    assert len(cluster.created) == 1
    assert [count for _, _, count, _ in cluster.bumped] == [2, 3]
    clock.now += REPEAT_WINDOW + 1
    await reporter.mount_failed(VOLUME_ID, "vol_a", REFUSED)
    assert len(cluster.created) == 2


async def test_another_reason_is_another_event() -> None:
    cluster = FakeCluster(claims={VOLUME_ID: CLAIM})
    reporter = events(cluster)
    await reporter.mount_failed(VOLUME_ID, "vol_a", REFUSED)
    await reporter.mount_failed(VOLUME_ID, "vol_a", Failure("VolumeNotFound", "10.77.0.11", ""))
    assert len(cluster.created) == 2


async def test_no_claim_and_api_errors_are_only_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="provisioner.csi.events")
    await events(FakeCluster()).mount_failed(VOLUME_ID, "vol_a", REFUSED)
    assert "no claim found" in caplog.text
    await events(FakeCluster(fail=RuntimeError("HTTP 403 forbidden"))).mount_failed(VOLUME_ID, "vol_a", REFUSED)
    assert "could not post the MountFailed event" in caplog.text and "403" in caplog.text


async def test_events_off_logs_the_failure(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="provisioner.csi.events")
    await events(None).mount_failed(VOLUME_ID, "vol_a", REFUSED)
    assert "storage server 10.77.0.11" in caplog.text


def test_event_message_and_name_are_bounded() -> None:
    claim = ClaimRef("ns", "c" * 253, "u")
    body = claim_event(
        claim, message="m" * 5000, component="glusterfs.gluster.org", node="n", now="2026-01-01T00:00:00Z"
    )
    assert len(body["message"]) == 1024
    assert len(body["metadata"]["name"]) <= 253
    long_failure = Failure("Other", None, "x" * 300)
    assert len(events(None).message(VOLUME_ID, "v" * 64, long_failure, PodRef("n" * 63, "p" * 253))) <= 1024
