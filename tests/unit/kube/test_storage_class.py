"""StorageClass parameters, parsed strictly (``watch.storage_class``)."""

from __future__ import annotations

import pytest

from provisioner.errors import InvalidStorageClass, PermanentError
from provisioner.events import models
from provisioner.watch.storage_class import GID_MAX, GID_MIN, ClassParameters, class_parameters


def test_class_parameters_defaults() -> None:
    assert class_parameters("gold", {"cluster": "dev"}) == ClassParameters(
        cluster="dev",
        durability=models.ReplicateSpec(replica=3),
        gid_min=GID_MIN,
        gid_max=GID_MAX,
        options={},
        source="csi",
        csi_driver="glusterfs.gluster.org",
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


def test_the_in_tree_source_stays_for_old_clusters() -> None:
    parameters = class_parameters("gold", {"cluster": "dev", "pvSource": "glusterfs"})
    assert parameters.source == "glusterfs"


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
