"""The watcher's bridge against fake API calls, and its leadership loop (nothing leaves the process)."""

from __future__ import annotations

import asyncio
from typing import cast

from kubernetes_asyncio import client

from provisioner.bus.client import RequestSender
from provisioner.events import catalog, models
from provisioner.kube import names
from provisioner.settings import Settings
from provisioner.watch import decisions as claims
from provisioner.watch import watcher
from provisioner.watch.bridge import request_id
from provisioner.watch.lease import LeaderLease
from tests.unit.kube.samples import (
    GOLD,
    PROVISIONER,
    PV_UID,
    UID,
    Bridge,
    GiB,
    StandingLease,
    UnreachableApi,
    bound,
    claim,
    other_claim,
    pv,
)


def test_request_id_is_deterministic() -> None:
    first = request_id("provision", UID)
    assert first == request_id("provision", UID)
    assert len(first) == 32 and int(first, 16) >= 0
    assert first != request_id("delete", UID)
    assert request_id("expand", UID, str(2 * GiB)) != request_id("expand", UID, str(3 * GiB))


async def test_bridge_reserves_a_gid_then_sends_one_provision_request() -> None:
    world = Bridge()
    await world.bridge.claims_listed([claim()])
    assert world.core.patches == [
        ("apps", "data", {"metadata": {"resourceVersion": "7", "annotations": {names.CLAIM_GID: "40000"}}})
    ]
    [(event, key)] = world.sent
    assert key == "dev"
    assert event.type == catalog.PROVISION_REQUESTED
    assert event.id == request_id("provision", UID)
    assert isinstance(event.data, models.ProvisionVolume)
    assert event.data.gid == 40000
    assert event.data.volume_id == claims.claim_volume_id(UID) == event.subject
    # the claim's next event (now carrying the gid) is not a second request within the resync period
    annotated = claim(annotations={names.STORAGE_PROVISIONER: PROVISIONER, names.CLAIM_GID: "40000"})
    await world.bridge.claim_changed("MODIFIED", annotated)
    assert len(world.sent) == 1 and len(world.core.patches) == 1


async def test_bridge_gids_reserved_on_other_claims_are_not_handed_out() -> None:
    world = Bridge()
    reserved = other_claim(
        PV_UID, "other", annotations={names.STORAGE_PROVISIONER: PROVISIONER, names.CLAIM_GID: "40000"}
    )
    await world.bridge.volumes_listed([{**pv(phase="Bound"), "metadata": {**pv()["metadata"], "name": "pvc-old"}}])
    await world.bridge.claims_listed([claim(), reserved])
    gids = {e.data.volume_id: e.data.gid for e, _ in world.sent if isinstance(e.data, models.ProvisionVolume)}
    assert gids == {claims.claim_volume_id(UID): 40002, claims.claim_volume_id(PV_UID): 40000}


async def test_bridge_sends_nothing_for_a_claim_whose_pv_exists() -> None:
    world = Bridge()
    await world.bridge.volumes_listed([pv(phase="Available")])
    await world.bridge.claims_listed([claim()])
    assert world.sent == [] and world.core.patches == []


async def test_bridge_a_claim_changed_under_the_gid_patch_waits_for_its_next_event() -> None:
    world = Bridge()
    world.core.fail_with = 409
    await world.bridge.claim_changed("MODIFIED", claim())
    assert world.sent == []
    world.core.fail_with = None
    await world.bridge.claim_changed("MODIFIED", claim())
    [(event, _)] = world.sent
    assert isinstance(event.data, models.ProvisionVolume) and event.data.gid == 40000  # released, then reused


async def test_bridge_a_deleted_claim_frees_its_gid_unless_a_pv_holds_it() -> None:
    world = Bridge()
    await world.bridge.claims_listed([claim()])
    assert 40000 in world.bridge._gids
    reserved = claim(annotations={names.STORAGE_PROVISIONER: PROVISIONER, names.CLAIM_GID: "40000"})
    await world.bridge.claim_changed("DELETED", reserved)
    assert 40000 not in world.bridge._gids, "reserved but never used by a PV: free again"

    await world.bridge.volumes_listed([pv(phase="Bound")])  # a PV carrying gid 40001
    await world.bridge.claim_changed("DELETED", claim(annotations={names.CLAIM_GID: "40001"}))
    assert 40001 in world.bridge._gids, "its PV still holds it"


async def test_bridge_released_pv_becomes_a_delete_request_and_its_gid_is_freed() -> None:
    world = Bridge()
    await world.bridge.volumes_listed([pv()])
    [(event, key)] = world.sent
    assert (event.type, event.id, key) == (catalog.DELETE_REQUESTED, request_id("delete", PV_UID), "dev")
    assert event.data == claims.delete_request(pv(), PROVISIONER)
    assert 40001 in world.bridge._gids
    await world.bridge.volume_changed("DELETED", pv())
    assert 40001 not in world.bridge._gids


async def test_bridge_bound_claim_asking_for_more_becomes_an_expand_request() -> None:
    world = Bridge()
    await world.bridge.volumes_listed([pv(phase="Bound")])
    await world.bridge.claim_changed("MODIFIED", bound("3Gi"))
    [(event, _)] = world.sent
    assert event.type == catalog.EXPAND_REQUESTED
    assert event.id == request_id("expand", UID, str(3 * GiB))
    assert isinstance(event.data, models.ExpandVolume) and event.data.size == 3 * GiB


async def test_bridge_refuses_a_claim_once_per_version_with_an_event() -> None:
    world = Bridge({"gold": {**GOLD, "parameters": {"cluster": "dev", "resturl": "http://heketi"}}})
    await world.bridge.claim_changed("ADDED", claim())
    await world.bridge.claim_changed("MODIFIED", claim())  # the same resourceVersion
    assert world.sent == []
    [(ref, reason, message, warning)] = world.events.events
    assert (ref.uid, reason, warning) == (UID, "ProvisioningFailed", True)
    assert message.startswith("InvalidStorageClass: StorageClass gold: parameter resturl")


async def test_bridge_refuses_a_claim_of_a_missing_class() -> None:
    world = Bridge(classes={})
    await world.bridge.claims_listed([claim(annotations={names.STORAGE_PROVISIONER: PROVISIONER})])
    assert world.sent == []
    [(_, reason, message, _)] = world.events.events
    assert reason == "ProvisioningFailed" and "InvalidClaim" in message and "gold" in message


async def test_bridge_a_huge_claim_is_refused_and_does_not_stop_the_others() -> None:
    world = Bridge()
    huge = other_claim(PV_UID, "huge", storage="2Pi")
    await world.bridge.claims_listed([huge, claim()])
    assert [e.subject for e, _ in world.sent] == [claims.claim_volume_id(UID)]
    assert [reason for _, reason, _, _ in world.events.events] == ["ProvisioningFailed"]


async def test_bridge_ignores_claims_of_other_provisioners() -> None:
    world = Bridge({"gold": {**GOLD, "provisioner": "example.com/other"}})
    await world.bridge.claims_listed([claim(annotations={})])
    assert world.sent == [] and world.events.events == []


async def test_lead_ends_on_stop_even_while_the_api_server_is_away() -> None:
    stop = asyncio.Event()
    stop.set()
    lease = StandingLease()
    lease.lost.set()
    sender = cast(RequestSender, object())
    await asyncio.wait_for(
        watcher._lead(cast(client.ApiClient, UnreachableApi()), sender, Settings(), cast(LeaderLease, lease), stop),
        timeout=0.5,
    )
