"""The pure parts of ``provisioner.kube``: quantities and names, golden manifests, StorageClass
parameters, the claim → request decisions, the gid pool, the informer's list/watch loop (against a
scripted source), and the watcher's bridge (against fake API calls; nothing leaves the process).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes_asyncio import client
from prometheus_client import REGISTRY

from provisioner.bus.client import RequestSender
from provisioner.domain import derive_id
from provisioner.errors import GidsExhausted, InvalidClaim, InvalidStorageClass, PermanentError
from provisioner.events import catalog, models, results
from provisioner.events.envelope import Event
from provisioner.kube import manifests, names
from provisioner.kube.objects import KubeObjects
from provisioner.settings import Settings
from provisioner.watch import decisions as claims
from provisioner.watch import watcher
from provisioner.watch.bridge import ClaimBridge, request_id
from provisioner.watch.gids import GidPool
from provisioner.watch.informer import Gone, Informer, Obj, Source
from provisioner.watch.lease import LeaderLease
from provisioner.watch.storage_class import GID_MAX, GID_MIN, ClassParameters, class_parameters

GiB = 1024**3
UID = "0b7c3f2e-4d1a-4c6b-9e8f-1a2b3c4d5e6f"
PV_UID = "9f8e7d6c-5b4a-4321-8fed-cba987654321"
PROVISIONER = "gluster.org/glusterfs"
VOLUME_ID = "a" * 32


# --- names -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1Gi", GiB),
        ("500M", 500_000_000),
        ("1.5Gi", 1536 * 1024**2),
        ("1e9", 10**9),
        ("1E3", 1000),
        ("1.5e3", 1500),
        ("2Ki", 2048),
        ("3Ti", 3 * 1024**4),
        ("1k", 1000),
        ("7", 7),
        ("+7", 7),
        ("100m", 1),  # a tenth of a byte rounds up to a whole one
        ("1500m", 2),
        ("0.1", 1),
        ("1e-3", 1),
        ("0", 0),
        ("1Gi ", GiB),
        ("  1Gi", GiB),
    ],
)
def test_parse_quantity(text: str, size: int) -> None:
    assert names.parse_quantity(text) == size


@pytest.mark.parametrize(
    "text", ["", " ", "Gi", "-1Gi", "1 Gi", "1GB", "1K", "1gi", ".", "1..2", "1.2.3Mi", "abc", "1e"]
)
def test_parse_quantity_refuses_what_is_not_a_quantity(text: str) -> None:
    with pytest.raises(ValueError, match="invalid quantity"):
        names.parse_quantity(text)


def test_parse_quantity_reads_the_exa_suffix() -> None:
    assert names.parse_quantity("1E") == 10**18


def test_parse_quantity_with_a_huge_exponent_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="invalid quantity"):
        names.parse_quantity("1e1000000")


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (GiB, "1Gi"),
        (1536 * 1024**2, "1536Mi"),
        (2 * 1024**4, "2Ti"),
        (1024**5, "1024Ti"),
        (3 * 1024, "3Ki"),
        (1000, "1000"),
        (0, "0"),
    ],
)
def test_format_quantity_uses_the_largest_exact_binary_suffix(size: int, text: str) -> None:
    assert names.format_quantity(size) == text
    assert names.parse_quantity(text) == size


@pytest.mark.parametrize(
    ("size", "rounded"),
    [(0, GiB), (1, GiB), (GiB, GiB), (GiB + 1, 2 * GiB), (1536 * 1024**2, 2 * GiB), (10 * GiB, 10 * GiB)],
)
def test_round_up_to_gib(size: int, rounded: int) -> None:
    assert names.round_up_to_gib(size) == rounded


def test_object_names_follow_the_claim_uid() -> None:
    assert names.pv_name(UID) == f"pvc-{UID}"
    assert names.service_name(UID) == f"glusterfs-dynamic-{UID}"


# --- manifests ----------------------------------------------------------------------------------------


def claim_ref(name: str = "data") -> models.ClaimRef:
    return models.ClaimRef(namespace="apps", name=name, uid=UID)


def claim_volume(**fields: Any) -> models.ClaimVolume:
    return models.ClaimVolume.model_validate(
        {"claim": claim_ref().model_dump(), "storage_class": "gold", "provisioner": PROVISIONER, **fields}
    )


def volume_out(*, gid: int | None = 2001, mount: str = "10.0.0.1:/vol_a") -> results.VolumeOut:
    return results.VolumeOut(
        cluster="dev",
        volume_id=VOLUME_ID,
        name="vol_a",
        size=GiB,
        durability=models.ReplicateSpec(),
        bricks=[],
        mount=mount,
        backup_servers=["10.0.0.2", "10.0.0.3"],
        gid=gid,
    )


CLAIM_REFERENCE = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "apps", "name": "data", "uid": UID}


def pv_annotations(*, gid: str | None) -> dict[str, str]:
    notes = {
        "pv.kubernetes.io/provisioned-by": PROVISIONER,
        "gluster.org/volume-id": VOLUME_ID,
        "gluster.org/volume-name": "vol_a",
        "gluster.org/cluster": "dev",
        "gluster.org/type": "file",
        "Description": "Gluster-Internal: Dynamically provisioned PV",
    }
    if gid is not None:
        notes["pv.beta.kubernetes.io/gid"] = gid
    return notes


def test_persistent_volume_with_a_glusterfs_source() -> None:
    spec = claim_volume(access_modes=["ReadWriteMany", "ReadOnlyMany"], reclaim_policy="Retain", mount_options=["ro"])
    assert manifests.persistent_volume(spec, volume_out()) == {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"pvc-{UID}", "annotations": pv_annotations(gid="2001")},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteMany", "ReadOnlyMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "gold",
            "volumeMode": "Filesystem",
            "claimRef": CLAIM_REFERENCE,
            "mountOptions": ["ro"],
            "glusterfs": {
                "endpoints": f"glusterfs-dynamic-{UID}",
                "endpointsNamespace": "apps",
                "path": "vol_a",
                "readOnly": False,
            },
        },
    }


def test_persistent_volume_with_a_csi_source() -> None:
    spec = claim_volume(source="csi", csi_driver="org.gluster.glusterfs", mount_options=["log-level=ERROR"])
    assert manifests.persistent_volume(spec, volume_out(gid=40000)) == {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"pvc-{UID}", "annotations": pv_annotations(gid="40000")},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": "gold",
            "volumeMode": "Filesystem",
            "claimRef": CLAIM_REFERENCE,
            "mountOptions": ["log-level=ERROR"],
            "csi": {
                "driver": "org.gluster.glusterfs",
                "volumeHandle": VOLUME_ID,
                "volumeAttributes": {
                    "cluster": "dev",
                    "volume": "vol_a",
                    "mount": "10.0.0.1:/vol_a",
                    "backupServers": "10.0.0.2,10.0.0.3",
                },
            },
        },
    }


def test_persistent_volume_without_gid_or_mount_options() -> None:
    pv = manifests.persistent_volume(claim_volume(), volume_out(gid=None))
    assert pv["metadata"]["annotations"] == pv_annotations(gid=None)
    assert "mountOptions" not in pv["spec"]
    assert set(pv["spec"]) == {
        "capacity",
        "accessModes",
        "persistentVolumeReclaimPolicy",
        "storageClassName",
        "volumeMode",
        "claimRef",
        "glusterfs",
    }


def service_metadata(label: str = "data") -> dict[str, Any]:
    return {
        "name": f"glusterfs-dynamic-{UID}",
        "namespace": "apps",
        "labels": {"gluster.kubernetes.io/provisioned-for-pvc": label},
    }


def test_servers_are_the_mount_host_then_the_backups() -> None:
    assert manifests.servers(volume_out()) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


def test_endpoints_keep_ip_hosts_and_leave_hostnames_out() -> None:
    hosts = ["10.0.0.1", "gluster-2.example.com", "fd00::3", "node4"]
    assert manifests.endpoints(claim_ref(), hosts) == {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": service_metadata(),
        "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "fd00::3"}], "ports": [{"port": 1, "protocol": "TCP"}]}],
    }


def test_endpoints_without_any_ip_have_no_subsets() -> None:
    endpoints = manifests.endpoints(claim_ref(), ["gluster-1", "gluster-2"])
    assert endpoints["subsets"] == []
    assert manifests.endpoints(claim_ref(), [])["subsets"] == []


def test_service_is_headless_on_port_one_without_an_owner() -> None:
    assert manifests.service(claim_ref()) == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": service_metadata(),
        "spec": {"clusterIP": "None", "ports": [{"port": 1, "protocol": "TCP", "targetPort": 1}]},
    }


def test_service_label_is_a_valid_label_value_for_a_long_claim_name() -> None:
    name = "a" * 62 + "-b" + "c" * 100  # 63rd character is a '-': the label must not end with it
    label = manifests.service(claim_ref(name))["metadata"]["labels"][names.PROVISIONED_FOR]
    assert label == "a" * 62


def test_claim_event() -> None:
    event = manifests.claim_event(
        claim_ref(),
        reason="ProvisioningFailed",
        message="x" * 2000,
        warning=True,
        suffix="abc",
        now="2024-01-02T03:04:05Z",
    )
    assert event == {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "data.abc", "namespace": "apps"},
        "involvedObject": CLAIM_REFERENCE,
        "reason": "ProvisioningFailed",
        "message": "x" * 1024,
        "type": "Warning",
        "source": {"component": "gluster-provisioner"},
        "reportingComponent": "gluster-provisioner",
        "firstTimestamp": "2024-01-02T03:04:05Z",
        "lastTimestamp": "2024-01-02T03:04:05Z",
        "count": 1,
    }
    normal = manifests.claim_event(claim_ref(), reason="Provisioning", message="m", warning=False, suffix="s", now="t")
    assert normal["type"] == "Normal"


def test_claim_annotations_name_the_volume() -> None:
    assert manifests.claim_annotations(volume_out()) == {
        "metadata": {"annotations": {"gluster.org/volume-id": VOLUME_ID, "gluster.org/cluster": "dev"}}
    }


# --- StorageClass parameters -----------------------------------------------------------------------------


def test_class_parameters_defaults() -> None:
    assert class_parameters("gold", {"cluster": "dev"}) == ClassParameters(
        cluster="dev",
        durability=models.ReplicateSpec(replica=3),
        gid_min=GID_MIN,
        gid_max=GID_MAX,
        options={},
        source="glusterfs",
        csi_driver=None,
        zone_checking="none",
        snapshot_factor=1.0,
    )


def test_class_parameters_every_parameter() -> None:
    raw = {
        "cluster": "dev",
        "volumetype": "disperse:4:2",
        "gidMin": "40000",
        "gidMax": "40999",
        "volumeoptions": "performance.readdir-ahead on, features.shard enable",
        "pvSource": "csi",
        "csiDriver": "org.gluster.glusterfs",
        "zoneChecking": "strict",
        "snapFactor": "1.5",
    }
    assert class_parameters("gold", raw) == ClassParameters(
        cluster="dev",
        durability=models.DisperseSpec(data=4, redundancy=2),
        gid_min=40000,
        gid_max=40999,
        options={"performance.readdir-ahead": "on", "features.shard": "enable"},
        source="csi",
        csi_driver="org.gluster.glusterfs",
        zone_checking="strict",
        snapshot_factor=1.5,
    )


@pytest.mark.parametrize(
    ("volumetype", "durability"),
    [
        ("none", models.DistributeSpec()),
        ("replicate", models.ReplicateSpec(replica=3)),
        ("replicate:2", models.ReplicateSpec(replica=2)),
        ("Replicate:3", models.ReplicateSpec(replica=3)),
        ("arbiter", models.ReplicateSpec(replica=3, arbiter=True)),
        ("disperse:2:1", models.DisperseSpec(data=2, redundancy=1)),
    ],
)
def test_class_parameters_volume_types(
    volumetype: str, durability: models.DistributeSpec | models.ReplicateSpec | models.DisperseSpec
) -> None:
    assert class_parameters("gold", {"cluster": "dev", "volumetype": volumetype}).durability == durability


def test_class_parameters_keys_are_case_insensitive() -> None:
    params = class_parameters("gold", {"CLUSTER": "dev", "gidMin": "5000", "GIDMAX": "6000", "VolumeType": "none"})
    assert (params.cluster, params.gid_min, params.gid_max) == ("dev", 5000, 6000)
    assert params.durability == models.DistributeSpec()


def test_csi_driver_is_ignored_for_a_glusterfs_source() -> None:
    assert class_parameters("gold", {"cluster": "dev", "csidriver": "org.gluster.glusterfs"}).csi_driver is None


@pytest.mark.parametrize(
    ("raw", "parameter"),
    [
        ({"cluster": "dev", "resturl": "http://heketi:8080"}, "resturl"),
        ({"cluster": "dev", "Bogus": "1"}, "bogus"),
        ({}, "cluster"),
        ({"cluster": ""}, "cluster"),
        ({"cluster": "Not_A_Label"}, "cluster"),
        ({"cluster": "dev", "volumetype": "replicate:7"}, "volumetype"),
        ({"cluster": "dev", "volumetype": "replicate:x"}, "volumetype"),
        ({"cluster": "dev", "volumetype": "mirror"}, "volumetype"),
        ({"cluster": "dev", "volumetype": "disperse:2:2"}, "volumetype"),
        ({"cluster": "dev", "gidMin": "3000", "gidMax": "2500"}, "gidmin"),
        ({"cluster": "dev", "gidMin": "100"}, "gidmin"),
        ({"cluster": "dev", "gidMin": "two"}, "gidmin"),
        ({"cluster": "dev", "gidMax": "2147483648"}, "gidmin"),
        ({"cluster": "dev", "pvSource": "nfs"}, "pvsource"),
        ({"cluster": "dev", "pvSource": "csi"}, "csidriver"),
        ({"cluster": "dev", "pvSource": "csi", "csiDriver": "Not A Driver"}, "csidriver"),
        ({"cluster": "dev", "volumeoptions": "auth.allow *"}, "volumeoptions"),
        ({"cluster": "dev", "volumeoptions": "nfs.disable off"}, "volumeoptions"),
        ({"cluster": "dev", "volumeoptions": "performance.readdir-ahead"}, "volumeoptions"),
        ({"cluster": "dev", "volumeoptions": "performance.x on;rm -rf"}, "volumeoptions"),
        ({"cluster": "dev", "zonechecking": "soft"}, "zonechecking"),
        ({"cluster": "dev", "snapfactor": "many"}, "snapfactor"),
        ({"cluster": "dev", "snapfactor": "0.5"}, "snapfactor"),
        ({"cluster": "dev", "snapfactor": "101"}, "snapfactor"),
        ({"cluster": "dev", "snapfactor": "nan"}, "snapfactor"),
    ],
)
def test_class_parameter_errors_name_the_parameter(raw: dict[str, str], parameter: str) -> None:
    with pytest.raises(InvalidStorageClass) as raised:
        class_parameters("gold", raw)
    assert raised.value.reason == "InvalidStorageClass"
    assert isinstance(raised.value, PermanentError)
    assert f"StorageClass gold: parameter {parameter}:" in str(raised.value)


def test_no_parameters_at_all_is_a_missing_cluster() -> None:
    with pytest.raises(InvalidStorageClass, match="parameter cluster"):
        class_parameters("gold", None)


# --- claims ---------------------------------------------------------------------------------------------


def claim(
    *,
    storage: str | None = "1500Mi",
    annotations: dict[str, str] | None = None,
    phase: str | None = "Pending",
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {
            "name": "data",
            "namespace": "apps",
            "uid": UID,
            "resourceVersion": "7",
            "annotations": {names.STORAGE_PROVISIONER: PROVISIONER} if annotations is None else annotations,
        },
        "spec": {"storageClassName": "gold", **spec},
    }
    if storage is not None:
        body["spec"]["resources"] = {"requests": {"storage": storage}}
    if phase is not None:
        body["status"] = {"phase": phase}
    return body


STORAGE_CLASS = {
    "metadata": {"name": "gold"},
    "provisioner": PROVISIONER,
    "reclaimPolicy": "Retain",
    "mountOptions": ["log-level=ERROR"],
    "parameters": {"cluster": "dev", "volumetype": "replicate:2", "volumeoptions": "performance.readdir-ahead on"},
}


def params() -> ClassParameters:
    return class_parameters("gold", STORAGE_CLASS["parameters"])  # type: ignore[arg-type]


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


def pv(
    *, phase: str = "Released", policy: str = "Delete", provisioner: str = PROVISIONER, capacity: str = "2Gi"
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"pvc-{UID}",
            "uid": PV_UID,
            "annotations": {
                names.PROVISIONED_BY: provisioner,
                names.VOLUME_ID: VOLUME_ID,
                names.CLUSTER: "dev",
                names.GID: "40001",
            },
        },
        "spec": {
            "persistentVolumeReclaimPolicy": policy,
            "capacity": {"storage": capacity},
            "claimRef": {"namespace": "apps", "name": "data", "uid": UID},
        },
        "status": {"phase": phase},
    }


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


def bound(storage: str) -> dict[str, Any]:
    return claim(storage=storage, phase="Bound", volumeName=f"pvc-{UID}")


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


# --- gids -------------------------------------------------------------------------------------------------


def test_gid_pool_hands_out_the_lowest_free_gid() -> None:
    pool = GidPool([2000, 2001, 2003])
    assert pool.allocate(2000, 2010) == 2002
    assert pool.allocate(2000, 2010) == 2004
    assert 2002 in pool and 2004 in pool
    assert pool.allocate(1990, 1995) == 1990  # used gids outside the range do not matter


def test_gid_pool_marked_gids_are_skipped_and_released_ones_reused() -> None:
    pool = GidPool()
    pool.mark(5000)
    assert pool.allocate(5000, 5005) == 5001
    pool.release(5000)
    assert 5000 not in pool
    assert pool.allocate(5000, 5005) == 5000
    pool.release(4242)  # releasing a gid never handed out is harmless


def test_gid_pool_exhausted_names_the_range() -> None:
    pool = GidPool([3000, 3001])
    with pytest.raises(GidsExhausted, match=r"3000\.\.3001") as raised:
        pool.allocate(3000, 3001)
    assert raised.value.reason == "GidsExhausted"
    assert isinstance(raised.value, PermanentError)


@settings(max_examples=300)
@given(
    used=st.sets(st.integers(min_value=0, max_value=60)),
    low=st.integers(min_value=0, max_value=50),
    width=st.integers(min_value=0, max_value=20),
    count=st.integers(min_value=1, max_value=25),
)
def test_gid_pool_never_hands_out_a_used_gid(used: set[int], low: int, width: int, count: int) -> None:
    high = low + width
    pool = GidPool(used)
    free = sorted(set(range(low, high + 1)) - used)
    handed: list[int] = []
    for _ in range(count):
        try:
            handed.append(pool.allocate(low, high))
        except GidsExhausted:
            assert len(handed) == len(free), "exhausted while a gid was still free"
            break
    assert all(low <= gid <= high for gid in handed)
    assert not set(handed) & used
    assert len(set(handed)) == len(handed)
    assert handed == free[: len(handed)], "not the lowest free gids, in order"


# --- informer ----------------------------------------------------------------------------------------------

ListStep = tuple[list[Obj], str] | BaseException
WatchStep = list[tuple[str, Obj]] | BaseException


class ScriptedSource:
    """Plays lists and watch streams in order; when a script runs out it behaves like an idle server:
    a watch ends after its timeout with nothing in it, a list never answers."""

    def __init__(self, lists: Sequence[ListStep], watches: Sequence[WatchStep]) -> None:
        self.lists = list(lists)
        self.watches = list(watches)
        self.list_calls: list[float] = []
        self.watched_from: list[str] = []

    async def list_all(self) -> tuple[list[Obj], str]:
        self.list_calls.append(time.monotonic())
        if not self.lists:
            await asyncio.Event().wait()
        step = self.lists.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step

    async def watch_from(self, resource_version: str, timeout: float) -> AsyncIterator[tuple[str, Obj]]:
        self.watched_from.append(resource_version)
        await asyncio.sleep(0)
        if not self.watches:
            await asyncio.sleep(timeout)
            return
        step = self.watches.pop(0)
        if isinstance(step, BaseException):
            raise step
        for event in step:
            yield event

    def source(self, kind: str = "persistentvolumeclaims") -> Source:
        return Source(kind=kind, list_all=self.list_all, watch_from=self.watch_from)


def obj(name: str, version: str) -> Obj:
    return {"metadata": {"name": name, "resourceVersion": version}}


class Handlers:
    def __init__(self) -> None:
        self.lists: list[list[str]] = []
        self.events: list[tuple[str, str]] = []

    async def on_list(self, items: Sequence[Obj]) -> None:
        self.lists.append([item["metadata"]["name"] for item in items])

    async def on_event(self, kind: str, item: Obj) -> None:
        self.events.append((kind, item["metadata"].get("name", "")))


async def until(condition: Callable[[], bool], *, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        await asyncio.sleep(0.001)


async def play(
    scripted: ScriptedSource,
    done: Callable[[Handlers], bool],
    *,
    resync: float = 3600.0,
    retry: float = 2.0,
    kind: str = "persistentvolumeclaims",
) -> tuple[Handlers, Informer]:
    handlers = Handlers()
    informer = Informer(
        scripted.source(kind), on_list=handlers.on_list, on_event=handlers.on_event, resync=resync, retry=retry
    )
    task = asyncio.create_task(informer.run())
    try:
        await until(lambda: done(handlers) or task.done())
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    return handlers, informer


def relists(kind: str, reason: str) -> float:
    value = REGISTRY.get_sample_value("provisioner_watch_relists_total", {"resource": kind, "reason": reason})
    return value or 0.0


async def test_informer_lists_then_hands_on_every_watch_event() -> None:
    scripted = ScriptedSource(
        lists=[([obj("a", "3"), obj("b", "5")], "10")],
        watches=[[("ADDED", obj("c", "11")), ("MODIFIED", obj("a", "12")), ("DELETED", obj("b", "13"))]],
    )
    handlers, informer = await play(scripted, lambda h: len(scripted.watched_from) == 2)
    assert handlers.lists == [["a", "b"]]
    assert handlers.events == [("ADDED", "c"), ("MODIFIED", "a"), ("DELETED", "b")]
    assert informer.synced.is_set()
    assert scripted.watched_from == ["10", "13"]


async def test_informer_resumes_each_watch_from_the_last_version_seen() -> None:
    scripted = ScriptedSource(
        lists=[([], "10")],
        watches=[
            [("ADDED", obj("a", "11")), ("MODIFIED", obj("a", "12"))],
            [],  # a stream that ended at once (dropped connection)
            [("ADDED", obj("b", "20"))],
        ],
    )
    handlers, informer = await play(scripted, lambda h: len(scripted.watched_from) == 4)
    assert scripted.watched_from == ["10", "12", "12", "20"]
    assert handlers.lists == [[]]  # no relist for an ended stream
    assert informer.resource_version == "20"


async def test_informer_relists_when_the_version_is_gone() -> None:
    kind = "persistentvolumes"
    before = relists(kind, "gone")
    scripted = ScriptedSource(
        lists=[([obj("a", "3")], "10"), ([obj("a", "3"), obj("b", "25")], "30")],
        watches=[[("ADDED", obj("x", "11"))], Gone(), [("MODIFIED", obj("b", "31"))]],
    )
    handlers, _ = await play(scripted, lambda h: len(scripted.watched_from) == 4, kind=kind)
    assert handlers.lists == [["a"], ["a", "b"]]
    assert handlers.events == [("ADDED", "x"), ("MODIFIED", "b")]
    assert scripted.watched_from == ["10", "11", "30", "31"]
    assert relists(kind, "gone") == before + 1


async def test_informer_bookmark_moves_the_version_without_an_event() -> None:
    scripted = ScriptedSource(
        lists=[([], "10")],
        watches=[[("BOOKMARK", {"metadata": {"resourceVersion": "40"}}), ("ADDED", {"metadata": {"name": "n"}})]],
    )
    handlers, informer = await play(scripted, lambda h: len(scripted.watched_from) == 2)
    assert handlers.events == [("ADDED", "n")]  # an object without a version keeps the bookmark's
    assert scripted.watched_from == ["10", "40"]
    assert informer.resource_version == "40"


async def test_informer_retries_a_failed_list_after_the_retry_delay() -> None:
    kind = "persistentvolumeclaims"
    before = relists(kind, "error")
    scripted = ScriptedSource(lists=[ConnectionRefusedError("apiserver away"), ([obj("a", "1")], "1")], watches=[])
    handlers, informer = await play(scripted, lambda h: len(scripted.watched_from) == 1, retry=0.02, kind=kind)
    assert handlers.lists == [["a"]]
    assert len(scripted.list_calls) == 2
    assert scripted.list_calls[1] - scripted.list_calls[0] >= 0.02
    assert relists(kind, "error") == before + 1
    assert informer.synced.is_set()


async def test_informer_retries_a_failing_handler_by_relisting() -> None:
    scripted = ScriptedSource(lists=[([obj("a", "1")], "1"), ([obj("a", "1")], "2")], watches=[])
    calls: list[int] = []

    async def flaky(items: Sequence[Obj]) -> None:
        calls.append(len(items))
        if len(calls) == 1:
            raise RuntimeError("handler failed")

    informer = Informer(scripted.source(), on_list=flaky, on_event=Handlers().on_event, resync=3600.0, retry=0.001)
    task = asyncio.create_task(informer.run())
    try:
        await until(lambda: len(scripted.watched_from) == 1)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert calls == [1, 1]
    assert scripted.watched_from == ["2"]


async def test_informer_relists_at_each_resync() -> None:
    kind = "persistentvolumes"
    before = relists(kind, "resync")
    scripted = ScriptedSource(lists=[([obj("a", "1")], "1"), ([obj("a", "1"), obj("b", "2")], "2")], watches=[])
    handlers, _ = await play(scripted, lambda h: len(h.lists) == 2, resync=0.05, kind=kind)
    assert handlers.lists == [["a"], ["a", "b"]]
    assert relists(kind, "resync") == before + 1
    assert scripted.watched_from[0] == "1"
    assert scripted.list_calls[1] - scripted.list_calls[0] >= 0.05


# --- watcher --------------------------------------------------------------------------------------------------


def test_request_id_is_deterministic() -> None:
    first = request_id("provision", UID)
    assert first == request_id("provision", UID)
    assert len(first) == 32 and int(first, 16) >= 0
    assert first != request_id("delete", UID)
    assert request_id("expand", UID, str(2 * GiB)) != request_id("expand", UID, str(3 * GiB))


class FakeApi:
    """What ClaimBridge asks of the ApiClient itself; every API call goes to the fakes below."""

    def sanitize_for_serialization(self, found: Any) -> Any:
        return found


class FakeStorage:
    def __init__(self, classes: dict[str, Obj]) -> None:
        self.classes = classes
        self.reads: list[str] = []

    async def read_storage_class(self, name: str) -> Obj:
        self.reads.append(name)
        if name not in self.classes:
            raise client.ApiException(status=404, reason="Not Found")
        return self.classes[name]


class FakeCore:
    def __init__(self) -> None:
        self.patches: list[tuple[str, str, Obj]] = []
        self.fail_with: int | None = None

    async def patch_namespaced_persistent_volume_claim(self, name: str, namespace: str, body: Obj) -> Obj:
        if self.fail_with is not None:
            raise client.ApiException(status=self.fail_with, reason="refused")
        self.patches.append((namespace, name, body))
        return {}


class FakeEvents:
    def __init__(self) -> None:
        self.events: list[tuple[models.ClaimRef, str, str, bool]] = []

    async def event(self, claim: models.ClaimRef, reason: str, message: str, *, warning: bool = False) -> None:
        self.events.append((claim, reason, message, warning))


class Bridge:
    def __init__(self, classes: dict[str, Obj] | None = None) -> None:
        self.sent: list[tuple[Event, str]] = []
        self.storage = FakeStorage({"gold": dict(GOLD)} if classes is None else classes)
        self.core = FakeCore()
        self.events = FakeEvents()
        self.bridge = ClaimBridge(cast(client.ApiClient, FakeApi()), self.send, Settings())
        self.bridge._storage = cast(client.StorageV1Api, self.storage)
        self.bridge._core = cast(client.CoreV1Api, self.core)
        self.bridge._objects = cast(KubeObjects, self.events)

    async def send(self, event: Event, key: str) -> None:
        self.sent.append((event, key))


GOLD: Obj = {
    "metadata": {"name": "gold"},
    "provisioner": PROVISIONER,
    "parameters": {"cluster": "dev", "gidMin": "40000", "gidMax": "40010"},
}


def other_claim(uid: str, name: str, **fields: Any) -> dict[str, Any]:
    body = claim(**fields)
    body["metadata"].update(uid=uid, name=name)
    return body


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


class UnreachableApi:
    """An ApiClient whose every call fails as if the API server were away."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise ConnectionRefusedError(f"{name}: apiserver away")

        return refuse


class StandingLease:
    def __init__(self) -> None:
        self.lost = asyncio.Event()


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
