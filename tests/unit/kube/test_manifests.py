"""Golden manifests of a claim's PV, Endpoints, Service and events (``kube.manifests``)."""

from __future__ import annotations

from provisioner.kube import manifests, names
from tests.unit.kube.samples import (
    CLAIM_REFERENCE,
    PROVISIONER,
    UID,
    VOLUME_ID,
    claim_ref,
    claim_volume,
    pv_annotations,
    service_metadata,
    volume_out,
)


def test_persistent_volume_with_a_glusterfs_source() -> None:
    spec = claim_volume(
        access_modes=["ReadWriteMany", "ReadOnlyMany"],
        reclaim_policy="Retain",
        mount_options=["ro"],
        source="glusterfs",
    )
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


def test_persistent_volume_with_the_default_csi_source() -> None:
    """The attributes are exactly what the node plugin reads (``provisioner.csi.attributes``)."""
    spec = claim_volume(mount_options=["log-level=ERROR"])
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
                "driver": "glusterfs.gluster.org",
                "volumeHandle": VOLUME_ID,
                "volumeAttributes": {"volume": "vol_a", "servers": "10.0.0.1,10.0.0.2,10.0.0.3"},
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
        "csi",
    }


def test_servers_are_the_mount_host_then_the_backups() -> None:
    assert manifests.servers(volume_out()) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


def test_endpoints_keep_ip_hosts_and_leave_hostnames_out() -> None:
    volume = volume_out(mount="10.0.0.1:/vol_a", backups=("gluster-2.example.com", "10.0.0.3", "node4"))
    assert manifests.endpoints(claim_ref(), volume, PROVISIONER) == {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": service_metadata(),
        "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.3"}], "ports": [{"port": 1, "protocol": "TCP"}]}],
    }


def test_endpoints_without_any_ip_have_no_subsets() -> None:
    volume = volume_out(mount="gluster-1:/vol_a", backups=("gluster-2",))
    assert manifests.endpoints(claim_ref(), volume, PROVISIONER)["subsets"] == []


def test_service_is_headless_on_port_one() -> None:
    assert manifests.service(claim_ref(), volume_out(), PROVISIONER) == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": service_metadata(),
        "spec": {"clusterIP": "None", "ports": [{"port": 1, "protocol": "TCP", "targetPort": 1}]},
    }


def test_service_label_is_a_valid_label_value_for_a_long_claim_name() -> None:
    name = "a" * 62 + "-b" + "c" * 100  # 63rd character is a '-': the label must not end with it
    label = manifests.service(claim_ref(name), volume_out(), PROVISIONER)["metadata"]["labels"][names.PROVISIONED_FOR]
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


def test_the_pv_owns_its_endpoints_and_service() -> None:
    assert manifests.owned_by("pvc-x", "u-1") == {
        "metadata": {
            "ownerReferences": [{"apiVersion": "v1", "kind": "PersistentVolume", "name": "pvc-x", "uid": "u-1"}]
        }
    }


def test_only_objects_with_our_marks_for_the_volume_are_ours() -> None:
    notes = pv_annotations(gid=None)
    ours = {"provisioner": PROVISIONER, "cluster": "dev"}
    assert manifests.is_ours(notes, volume_id=VOLUME_ID, name=None, **ours)
    assert manifests.is_ours(notes, volume_id=None, name="vol_a", **ours)
    assert not manifests.is_ours(notes, volume_id="b" * 32, name=None, **ours), "another volume's object"
    assert not manifests.is_ours(notes, volume_id=None, name="vol_b", **ours)
    assert not manifests.is_ours(notes, volume_id=None, name=None, **ours)
    assert not manifests.is_ours(notes, volume_id=VOLUME_ID, name=None, provisioner="other.org/x", cluster="dev")
    assert not manifests.is_ours(notes, volume_id=VOLUME_ID, name=None, provisioner=PROVISIONER, cluster="prod")
    assert not manifests.is_ours(None, volume_id=VOLUME_ID, name=None, **ours), "kube-system/kube-dns has no marks"
