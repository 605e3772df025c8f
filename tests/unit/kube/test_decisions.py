"""What the watcher asks for, decided from claims and PVs (``watch.decisions``)."""

from __future__ import annotations

from typing import Any

import pytest

from provisioner.domain import derive_id
from provisioner.errors import InvalidClaim, PermanentError
from provisioner.events import models
from provisioner.kube import names
from provisioner.watch import decisions as claims
from provisioner.watch.storage_class import class_parameters
from tests.unit.kube.samples import PROVISIONER, PV_UID, STORAGE_CLASS, UID, VOLUME_ID, GiB, bound, claim, params, pv


def test_a_pending_claim_naming_us_needs_a_volume() -> None:
    assert claims.needs_volume(claim(), PROVISIONER, None)
    assert claims.needs_volume(claim(phase=None), PROVISIONER, None)  # no status yet
    beta = claim(annotations={names.STORAGE_PROVISIONER_BETA: PROVISIONER})
    assert claims.needs_volume(beta, PROVISIONER, None)
    assert claims.needs_volume(claim(annotations={}), PROVISIONER, PROVISIONER)  # from the class


@pytest.mark.parametrize(
    ("body", "class_provisioner"),
    [
        (claim(volumeName="pvc-x"), PROVISIONER),
        (claim(phase="Bound"), PROVISIONER),
        (claim(phase="Lost"), PROVISIONER),
        (claim(annotations={names.STORAGE_PROVISIONER: "example.com/other"}), PROVISIONER),
        (claim(annotations={}), "example.com/other"),
        (claim(annotations={}), None),
    ],
)
def test_claims_that_need_no_volume_from_us(body: dict[str, Any], class_provisioner: str | None) -> None:
    assert not claims.needs_volume(body, PROVISIONER, class_provisioner)


def test_a_claim_being_deleted_needs_no_volume() -> None:
    body = claim()
    body["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    assert not claims.needs_volume(body, PROVISIONER, PROVISIONER)


def test_provision_request_from_a_claim_and_its_class() -> None:
    request = claims.provision_request(
        claim(accessModes=["ReadWriteMany"]), STORAGE_CLASS, params(), gid=40001, provisioner=PROVISIONER
    )
    assert request == models.ProvisionVolume(
        cluster="dev",
        size=2 * GiB,  # 1500Mi rounded up to whole GiB
        durability=models.ReplicateSpec(replica=2),
        volume_id=derive_id("claim", UID),
        gid=40001,
        options={"performance.readdir-ahead": "on"},
        labels={"kubernetes.namespace": "apps", "kubernetes.claim": "data"},
        kubernetes=models.ClaimVolume(
            claim=models.ClaimRef(namespace="apps", name="data", uid=UID),
            storage_class="gold",
            provisioner=PROVISIONER,
            access_modes=["ReadWriteMany"],
            reclaim_policy="Retain",
            mount_options=["log-level=ERROR"],
        ),
    )


def test_the_volume_id_of_a_claim_is_stable() -> None:
    assert claims.claim_volume_id(UID) == claims.claim_volume_id(UID) == derive_id("claim", UID)
    assert claims.claim_volume_id(UID) != claims.claim_volume_id(PV_UID)
    first = claims.provision_request(claim(), STORAGE_CLASS, params(), gid=40001, provisioner=PROVISIONER)
    again = claims.provision_request(claim(), STORAGE_CLASS, params(), gid=40001, provisioner=PROVISIONER)
    assert first.volume_id == again.volume_id == claims.claim_volume_id(UID)


def test_provision_request_defaults_without_access_modes_or_class_settings() -> None:
    bare_class = {"metadata": {"name": "gold"}, "provisioner": PROVISIONER}
    request = claims.provision_request(claim(), bare_class, params(), gid=40001, provisioner=PROVISIONER)
    assert request.kubernetes is not None
    assert request.kubernetes.access_modes == ["ReadWriteOnce"]
    assert request.kubernetes.reclaim_policy == "Delete"
    assert request.kubernetes.mount_options == []


def test_provision_request_carries_a_csi_source() -> None:
    csi = class_parameters("gold", {"cluster": "dev", "pvsource": "csi", "csidriver": "org.gluster.glusterfs"})
    request = claims.provision_request(claim(), STORAGE_CLASS, csi, gid=40001, provisioner=PROVISIONER)
    assert request.kubernetes is not None
    assert (request.kubernetes.source, request.kubernetes.csi_driver) == ("csi", "org.gluster.glusterfs")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (claim(volumeMode="Block"), "volumeMode Block"),
        (claim(selector={"matchLabels": {"tier": "gold"}}), "selector"),
        (claim(dataSource={"kind": "PersistentVolumeClaim", "name": "other"}), "dataSource"),
        (claim(dataSourceRef={"kind": "VolumeSnapshot", "name": "snap"}), "dataSource"),
        (claim(storage=None), "requests.storage is missing"),
        (claim(storage="lots"), "invalid quantity"),
    ],
)
def test_claims_we_cannot_serve_are_invalid(body: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidClaim, match=words) as raised:
        claims.provision_request(body, STORAGE_CLASS, params(), gid=40001, provisioner=PROVISIONER)
    assert raised.value.reason == "InvalidClaim"
    assert "apps/data" in str(raised.value)


def test_a_claim_over_the_largest_volume_is_invalid() -> None:
    with pytest.raises(InvalidClaim):
        claims.provision_request(claim(storage="2Pi"), STORAGE_CLASS, params(), gid=40001, provisioner=PROVISIONER)


def test_a_class_mount_option_we_cannot_carry_is_refused() -> None:
    quoted = {**STORAGE_CLASS, "mountOptions": ['context="system_u:object_r:nfs_t:s0"']}
    with pytest.raises(PermanentError):
        claims.provision_request(claim(), quoted, params(), gid=40001, provisioner=PROVISIONER)


def test_delete_request_for_a_released_pv_of_ours() -> None:
    assert claims.delete_request(pv(), PROVISIONER) == models.DeleteVolume(
        cluster="dev",
        volume_id=VOLUME_ID,
        kubernetes=models.ClaimObjects(
            persistent_volume=f"pvc-{UID}", namespace="apps", service=f"glusterfs-dynamic-{UID}"
        ),
    )


@pytest.mark.parametrize(
    "body",
    [
        pv(phase="Bound"),
        pv(phase="Available"),
        pv(policy="Retain"),
        pv(provisioner="example.com/other"),
    ],
)
def test_no_delete_request_unless_ours_released_and_policy_delete(body: dict[str, Any]) -> None:
    assert claims.delete_request(body, PROVISIONER) is None


def test_a_pv_without_our_volume_id_is_not_ours() -> None:
    body = pv()
    del body["metadata"]["annotations"][names.VOLUME_ID]
    assert not claims.ours(body, PROVISIONER)
    assert claims.delete_request(body, PROVISIONER) is None


def test_expand_request_for_a_bound_claim_asking_for_more() -> None:
    assert claims.expand_request(bound("2500Mi"), pv(phase="Bound"), PROVISIONER) == models.ExpandVolume(
        cluster="dev",
        size=3 * GiB,
        volume_id=VOLUME_ID,
        kubernetes=models.ClaimResize(
            persistent_volume=f"pvc-{UID}", claim=models.ClaimRef(namespace="apps", name="data", uid=UID)
        ),
    )


@pytest.mark.parametrize(
    ("body", "volume"),
    [
        (bound("2Gi"), pv(phase="Bound")),  # the same size
        (bound("1Gi"), pv(phase="Bound")),  # smaller: never shrink
        (claim(storage="5Gi", phase="Pending", volumeName=f"pvc-{UID}"), pv(phase="Bound")),
        (bound("5Gi"), pv(phase="Bound", provisioner="example.com/other")),
        (claim(storage="5Gi", phase="Bound", volumeName="pvc-another"), pv(phase="Bound")),
    ],
)
def test_no_expand_request_unless_bound_ours_and_bigger(body: dict[str, Any], volume: dict[str, Any]) -> None:
    assert claims.expand_request(body, volume, PROVISIONER) is None


def test_reserved_gid() -> None:
    assert claims.reserved_gid(pv()) == 40001
    assert claims.reserved_gid(claim(annotations={names.CLAIM_GID: "40002"})) == 40002
    assert claims.reserved_gid(claim(annotations={names.CLAIM_GID: "not-a-gid"})) is None
    assert claims.reserved_gid(claim(annotations={names.CLAIM_GID: "-5"})) is None
    assert claims.reserved_gid(claim(annotations={})) is None
    assert claims.reserved_gid({}) is None


def test_reserved_gid_of_a_unicode_digit_is_none() -> None:
    assert claims.reserved_gid(claim(annotations={names.CLAIM_GID: "²"})) is None
