"""What the watcher asks for, decided from claims and PVs as the API returns them (pure).

Every request the watcher sends is derived from object uids only, so sending it twice (a restarted
watcher, two watchers, a resync) names the same volume and the daemon answers it idempotently:
the volume id of a claim is ``derive_id("claim", <claim uid>)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from provisioner.domain import derive_id
from provisioner.errors import InvalidClaim
from provisioner.events import models
from provisioner.kube import names
from provisioner.watch.storage_class import ClassParameters

Manifest = Mapping[str, Any]


def claim_volume_id(claim_uid: str) -> str:
    return derive_id("claim", claim_uid)


def _meta(obj: Manifest) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _spec(obj: Manifest) -> Mapping[str, Any]:
    return obj.get("spec") or {}


def annotations_of(obj: Manifest) -> Mapping[str, str]:
    return _meta(obj).get("annotations") or {}


def uid(obj: Manifest) -> str:
    return str(_meta(obj).get("uid", ""))


def claim_ref(claim: Manifest) -> models.ClaimRef:
    meta = _meta(claim)
    return models.ClaimRef(namespace=meta.get("namespace", ""), name=meta.get("name", ""), uid=meta.get("uid", ""))


def class_name(claim: Manifest) -> str | None:
    return _spec(claim).get("storageClassName") or None


def needs_volume(claim: Manifest, provisioner: str, class_provisioner: str | None) -> bool:
    """A pending claim, not yet bound or being deleted, that names us (annotation, else its class)."""
    if _meta(claim).get("deletionTimestamp") or _spec(claim).get("volumeName"):
        return False
    if (claim.get("status") or {}).get("phase") not in (None, "Pending"):
        return False
    notes = annotations_of(claim)
    named = notes.get(names.STORAGE_PROVISIONER) or notes.get(names.STORAGE_PROVISIONER_BETA) or class_provisioner
    return named == provisioner


def requested_size(claim: Manifest) -> int:
    text = ((_spec(claim).get("resources") or {}).get("requests") or {}).get("storage")
    if not text:
        raise InvalidClaim(f"claim {_where(claim)}: spec.resources.requests.storage is missing")
    try:
        return names.parse_quantity(str(text))
    except ValueError as e:
        raise InvalidClaim(f"claim {_where(claim)}: spec.resources.requests.storage: {e}") from None


def provision_request(
    claim: Manifest, storage_class: Manifest, params: ClassParameters, *, gid: int, provisioner: str
) -> models.ProvisionVolume:
    spec = _spec(claim)
    if spec.get("volumeMode") == "Block":
        raise InvalidClaim(
            f"claim {_where(claim)}: volumeMode Block is not supported (gluster volumes are filesystems)"
        )
    if spec.get("selector"):
        raise InvalidClaim(f"claim {_where(claim)}: claims with a selector cannot be dynamically provisioned")
    if spec.get("dataSource") or spec.get("dataSourceRef"):
        raise InvalidClaim(f"claim {_where(claim)}: cloning and snapshots (dataSource) are not supported")
    try:
        return _provision_request(claim, storage_class, params, gid=gid, provisioner=provisioner)
    except ValidationError as e:
        raise InvalidClaim(f"claim {_where(claim)}: {_first_problem(e)}") from None


def _provision_request(
    claim: Manifest,
    storage_class: Manifest,
    params: ClassParameters,
    *,
    gid: int,
    provisioner: str,
) -> models.ProvisionVolume:
    spec = _spec(claim)
    ref = claim_ref(claim)
    class_meta = _meta(storage_class)
    return models.ProvisionVolume(
        cluster=params.cluster,
        size=names.round_up_to_gib(requested_size(claim)),
        durability=params.durability,
        volume_id=claim_volume_id(ref.uid),
        gid=gid,
        options=params.options,
        zone_checking=params.zone_checking,
        snapshot_factor=params.snapshot_factor,
        labels={"kubernetes.namespace": ref.namespace, "kubernetes.claim": ref.name[:63].rstrip("-._")},
        kubernetes=models.ClaimVolume(
            claim=ref,
            storage_class=class_meta.get("name", ""),
            provisioner=provisioner,
            access_modes=spec.get("accessModes") or ["ReadWriteOnce"],
            reclaim_policy=storage_class.get("reclaimPolicy") or "Delete",
            mount_options=storage_class.get("mountOptions") or [],
            source=params.source,
            csi_driver=params.csi_driver,
        ),
    )


def ours(pv: Manifest, provisioner: str) -> bool:
    notes = annotations_of(pv)
    return notes.get(names.PROVISIONED_BY) == provisioner and bool(notes.get(names.VOLUME_ID))


def delete_request(pv: Manifest, provisioner: str) -> models.DeleteVolume | None:
    """A PV of ours whose claim is gone, under policy Delete: its storage, then it, are removed."""
    if not ours(pv, provisioner) or (pv.get("status") or {}).get("phase") != "Released":
        return None
    if _spec(pv).get("persistentVolumeReclaimPolicy") != "Delete":
        return None
    notes = annotations_of(pv)
    claim = _spec(pv).get("claimRef") or {}
    return models.DeleteVolume(
        cluster=notes.get(names.CLUSTER, ""),
        volume_id=notes[names.VOLUME_ID],
        kubernetes=models.ClaimObjects(
            persistent_volume=_meta(pv).get("name", ""),
            namespace=claim.get("namespace", ""),
            service=names.service_name(claim.get("uid", "")),
        ),
    )


def expand_request(claim: Manifest, pv: Manifest, provisioner: str) -> models.ExpandVolume | None:
    """A bound claim of ours asking for more than its PV has."""
    if (claim.get("status") or {}).get("phase") != "Bound" or not ours(pv, provisioner):
        return None
    if _spec(claim).get("volumeName") != _meta(pv).get("name"):
        return None
    wanted = requested_size(claim)
    current = names.parse_quantity(str((_spec(pv).get("capacity") or {}).get("storage", "0")))
    if wanted <= current:
        return None
    notes = annotations_of(pv)
    try:
        return models.ExpandVolume(
            cluster=notes.get(names.CLUSTER, ""),
            size=names.round_up_to_gib(wanted),
            volume_id=notes[names.VOLUME_ID],
            kubernetes=models.ClaimResize(persistent_volume=_meta(pv).get("name", ""), claim=claim_ref(claim)),
        )
    except ValidationError as e:
        raise InvalidClaim(f"claim {_where(claim)}: {_first_problem(e)}") from None


def reserved_gid(obj: Manifest) -> int | None:
    """The gid a PV carries, or a claim has reserved; None when absent or not a number."""
    notes = annotations_of(obj)
    text = notes.get(names.GID) or notes.get(names.CLAIM_GID)
    return int(text) if text and text.isascii() and text.isdigit() else None


def _first_problem(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])


def _where(claim: Manifest) -> str:
    meta = _meta(claim)
    return f"{meta.get('namespace')}/{meta.get('name')}"
