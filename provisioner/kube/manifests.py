"""The Kubernetes objects of a provisioned claim, as plain JSON-ready dicts (pure; golden-tested).

The PV follows the external-provisioner contract (name, ``claimRef`` with uid, ``provisioned-by``,
reclaim policy and mount options from the StorageClass) and the in-tree glusterfs provisioner's
shape (gid annotation, Endpoints + headless Service listing the storage servers). The Endpoints and
Service are owned by the PV (an ownerReference, set once the PV exists), so they go with it; all
three carry our marks (``marks``), and nothing without them is ever deleted (``is_ours``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from provisioner.csi.attributes import volume_attributes
from provisioner.events.models import ClaimRef, ClaimVolume
from provisioner.events.results import VolumeOut
from provisioner.kube import names

Manifest = dict[str, Any]
GLUSTER_PORT = 1  # a placeholder port, as in-tree: the glusterfs source only needs the addresses


def claim_reference(claim: ClaimRef) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "namespace": claim.namespace,
        "name": claim.name,
        "uid": claim.uid,
    }


def persistent_volume(spec: ClaimVolume, volume: VolumeOut) -> Manifest:
    claim = spec.claim
    annotations = {
        **marks(volume.cluster, volume.volume_id, volume.name, spec.provisioner),
        "gluster.org/type": "file",
        "Description": "Gluster-Internal: Dynamically provisioned PV",
    }
    if volume.gid is not None:
        annotations[names.GID] = str(volume.gid)
    pv_spec: Manifest = {
        "capacity": {"storage": names.format_quantity(volume.size)},
        "accessModes": list(spec.access_modes),
        "persistentVolumeReclaimPolicy": spec.reclaim_policy,
        "storageClassName": spec.storage_class,
        "volumeMode": "Filesystem",
        "claimRef": claim_reference(claim),
    }
    if spec.mount_options:
        pv_spec["mountOptions"] = list(spec.mount_options)
    if spec.source == "csi":
        pv_spec["csi"] = {
            "driver": spec.csi_driver,
            "volumeHandle": volume.volume_id,
            "volumeAttributes": volume_attributes(volume.name, servers(volume)),
        }
    else:
        pv_spec["glusterfs"] = {
            "endpoints": names.service_name(claim.uid),
            "endpointsNamespace": claim.namespace,
            "path": volume.name,
            "readOnly": False,
        }
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": names.pv_name(claim.uid), "annotations": annotations},
        "spec": pv_spec,
    }


def servers(volume: VolumeOut) -> list[str]:
    """The storage servers of a volume: the mount host first, then the backup volfile servers."""
    return [volume.mount.split(":", 1)[0], *volume.backup_servers]


def endpoints(claim: ClaimRef, volume: VolumeOut, provisioner: str) -> Manifest:
    """Endpoints take addresses only: hosts that are not IP literals are left out (a CSI source needs none)."""
    addresses = [{"ip": host} for host in servers(volume) if _is_ip(host)]
    subsets = [{"addresses": addresses, "ports": [{"port": GLUSTER_PORT, "protocol": "TCP"}]}] if addresses else []
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": _service_metadata(claim, volume, provisioner),
        "subsets": subsets,
    }


def service(claim: ClaimRef, volume: VolumeOut, provisioner: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _service_metadata(claim, volume, provisioner),
        "spec": {"clusterIP": "None", "ports": [{"port": GLUSTER_PORT, "protocol": "TCP", "targetPort": GLUSTER_PORT}]},
    }


def _service_metadata(claim: ClaimRef, volume: VolumeOut, provisioner: str) -> Manifest:
    return {
        "name": names.service_name(claim.uid),
        "namespace": claim.namespace,
        "labels": {names.PROVISIONED_FOR: claim.name[:63].rstrip("-._")},
        "annotations": marks(volume.cluster, volume.volume_id, volume.name, provisioner),
    }


def marks(cluster: str, volume_id: str, volume_name: str, provisioner: str) -> dict[str, str]:
    """The annotations that make a PV, Endpoints or Service ours, and say for which volume."""
    return {
        names.PROVISIONED_BY: provisioner,
        names.VOLUME_ID: volume_id,
        names.VOLUME_NAME: volume_name,
        names.CLUSTER: cluster,
    }


def owned_by(pv_name: str, pv_uid: str) -> Manifest:
    """A merge patch making an Endpoints or Service a dependent of its PV (garbage-collected with it)."""
    return {
        "metadata": {
            "ownerReferences": [{"apiVersion": "v1", "kind": "PersistentVolume", "name": pv_name, "uid": pv_uid}]
        }
    }


def is_ours(
    annotations: Mapping[str, str] | None, *, provisioner: str, cluster: str, volume_id: str | None, name: str | None
) -> bool:
    """Whether an object carries our marks for this volume (by id when known, else by name)."""
    notes = annotations or {}
    if notes.get(names.PROVISIONED_BY) != provisioner or notes.get(names.CLUSTER) != cluster:
        return False
    if volume_id is not None:
        return notes.get(names.VOLUME_ID) == volume_id
    return name is not None and notes.get(names.VOLUME_NAME) == name


def claim_event(claim: ClaimRef, *, reason: str, message: str, warning: bool, suffix: str, now: str) -> Manifest:
    """A core/v1 Event on the claim, as ``kubectl describe pvc`` shows it."""
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{claim.name[:230]}.{suffix}", "namespace": claim.namespace},
        "involvedObject": claim_reference(claim),
        "reason": reason,
        "message": message[:1024],
        "type": "Warning" if warning else "Normal",
        "source": {"component": names.COMPONENT},
        "reportingComponent": names.COMPONENT,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


def claim_annotations(volume: VolumeOut) -> Manifest:
    """A merge patch recording on the claim which gluster volume serves it."""
    return {"metadata": {"annotations": {names.VOLUME_ID: volume.volume_id, names.CLUSTER: volume.cluster}}}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
