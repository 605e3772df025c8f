"""``LeaderLease`` against the real kube-apiserver: one holder at a time, takeover only after expiry
or a release, and a race for a fresh Lease has exactly one winner (the apiserver's optimistic
concurrency decides it, not timing).

Each test gets its own namespace, deleted at the end; the Leases last 2 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from devstack.kube import api_client, ensure_kube
from provisioner.watch.lease import LeaderLease

pytestmark = pytest.mark.integration

DURATION = 2.0


@pytest.fixture(scope="module")
def kubeconfig() -> Path:
    return ensure_kube()


@pytest_asyncio.fixture
async def api(kubeconfig: Path) -> AsyncIterator[client.ApiClient]:
    async with api_client(kubeconfig) as api:
        yield api


@pytest_asyncio.fixture
async def namespace(api: client.ApiClient) -> AsyncIterator[str]:
    name = f"lease-test-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        try:
            await core.delete_namespace(name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise


def candidate(api: client.ApiClient, namespace: str, identity: str, *, lease: str = "watch") -> LeaderLease:
    return LeaderLease(api, namespace=namespace, name=lease, identity=identity, duration=DURATION)


async def holder(api: client.ApiClient, namespace: str, lease: str = "watch") -> str | None:
    found = await client.CoordinationV1Api(api).read_namespaced_lease(lease, namespace)
    return found.spec.holder_identity if found.spec else None


async def test_first_candidate_wins_and_holds_while_it_renews(api: client.ApiClient, namespace: str) -> None:
    first, second = candidate(api, namespace, "first"), candidate(api, namespace, "second")
    assert await first.try_acquire()
    assert await holder(api, namespace) == "first"
    assert not await second.try_acquire()
    for _ in range(4):  # two whole durations, renewed every half duration
        await asyncio.sleep(DURATION / 2)
        assert await first.try_acquire(), "the holder could not renew"
        assert not await second.try_acquire(), "taken over while the holder renews"
    assert await holder(api, namespace) == "first"


async def test_second_takes_over_once_the_first_stops_renewing(api: client.ApiClient, namespace: str) -> None:
    first, second = candidate(api, namespace, "first"), candidate(api, namespace, "second")
    assert await first.try_acquire()
    renewed = time.monotonic()
    await asyncio.sleep(DURATION / 2)
    assert not await second.try_acquire(), "taken over before the Lease expired"
    deadline = renewed + DURATION + 5.0
    while not await second.try_acquire():
        assert time.monotonic() < deadline, "no takeover long after the Lease expired"
        await asyncio.sleep(0.1)
    assert time.monotonic() - renewed >= DURATION * 0.9  # not before the duration (allowing clock granularity)
    assert await holder(api, namespace) == "second"
    assert not await first.try_acquire(), "the old holder got it back"
    found = await client.CoordinationV1Api(api).read_namespaced_lease("watch", namespace)
    assert found.spec.lease_transitions == 1


async def test_release_hands_over_at_once(api: client.ApiClient, namespace: str) -> None:
    first, second = candidate(api, namespace, "first"), candidate(api, namespace, "second")
    campaign = asyncio.create_task(first.hold())
    try:
        await asyncio.wait_for(first.leading.wait(), timeout=10.0)
        assert not await second.try_acquire()
    finally:
        campaign.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await campaign
    await first.release()
    assert not first.leading.is_set()
    assert await holder(api, namespace) is None
    assert await second.try_acquire(), "a released Lease was not free at once"
    assert await holder(api, namespace) == "second"


async def test_release_by_a_candidate_that_does_not_lead_changes_nothing(api: client.ApiClient, namespace: str) -> None:
    first, second = candidate(api, namespace, "first"), candidate(api, namespace, "second")
    assert await first.try_acquire()
    await second.release()
    assert await holder(api, namespace) == "first"


async def test_a_race_for_a_fresh_lease_has_exactly_one_winner(
    kubeconfig: Path, api: client.ApiClient, namespace: str
) -> None:
    async with api_client(kubeconfig) as other:  # two clients, as two watcher processes would have
        for round_ in range(5):
            lease = f"race-{round_}"
            racers = [
                candidate(api, namespace, "first", lease=lease),
                candidate(other, namespace, "second", lease=lease),
            ]
            won = await asyncio.gather(*(racer.try_acquire() for racer in racers))
            assert sorted(won) == [False, True], won
            winner = racers[won.index(True)].identity
            assert await holder(api, namespace, lease) == winner


async def test_a_race_for_an_expired_lease_has_exactly_one_winner(
    kubeconfig: Path, api: client.ApiClient, namespace: str
) -> None:
    async with api_client(kubeconfig) as other:
        gone = candidate(api, namespace, "gone", lease="expired")
        assert await gone.try_acquire()
        await asyncio.sleep(DURATION + 0.5)
        racers = [
            candidate(api, namespace, "first", lease="expired"),
            candidate(other, namespace, "second", lease="expired"),
        ]
        won = await asyncio.gather(*(racer.try_acquire() for racer in racers))
        assert sorted(won) == [False, True], won
        assert await holder(api, namespace, "expired") == racers[won.index(True)].identity
