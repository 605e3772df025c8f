"""Names, annotations and quantities shared by the daemon's objects and the watcher.

The names follow the external-provisioner contract and the in-tree glusterfs provisioner, so
tools that know either recognise our objects: ``pvc-<claim uid>`` for the PV and
``glusterfs-dynamic-<claim uid>`` for the Endpoints and Service (uid, not claim name: a deleted and
re-created claim of the same name must not share them, kubernetes#70286).
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal

PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
STORAGE_PROVISIONER = "volume.kubernetes.io/storage-provisioner"
STORAGE_PROVISIONER_BETA = "volume.beta.kubernetes.io/storage-provisioner"
GID = "pv.beta.kubernetes.io/gid"
VOLUME_ID = "gluster.org/volume-id"
VOLUME_NAME = "gluster.org/volume-name"
CLUSTER = "gluster.org/cluster"
CLAIM_GID = "gluster.org/gid"
"""On a claim: the gid reserved for it before its request is sent, so a restarted watcher reuses it."""
PROVISIONED_FOR = "gluster.kubernetes.io/provisioned-for-pvc"
SERVICE_PREFIX = "glusterfs-dynamic"
COMPONENT = "gluster-provisioner"

GiB = 1024**3


def pv_name(claim_uid: str) -> str:
    return f"pvc-{claim_uid}"


def service_name(claim_uid: str) -> str:
    return f"{SERVICE_PREFIX}-{claim_uid}"


_QUANTITY = re.compile(r"^([+]?[0-9.]+)([eE][+-]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")
_SUFFIX = {
    None: Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def parse_quantity(text: str) -> int:
    """A Kubernetes resource quantity ("1Gi", "500M", "1.5Gi", "1e9") in whole bytes, rounded up."""
    match = _QUANTITY.match(text.strip())
    if not match:
        raise ValueError(f"invalid quantity {text!r}")
    number, suffix = match.groups()
    try:
        value = Decimal(number)
        if suffix is not None and re.fullmatch(r"[eE][+-]?[0-9]+", suffix):
            value = value * (Decimal(10) ** int(suffix[1:]))
        else:
            value = value * _SUFFIX[suffix]
    except (ArithmeticError, KeyError, ValueError) as e:
        raise ValueError(f"invalid quantity {text!r}") from e
    return int(value.to_integral_value(rounding=ROUND_CEILING))


def format_quantity(size: int) -> str:
    """Bytes as a quantity with the largest binary suffix that divides them exactly."""
    for suffix in ("Ti", "Gi", "Mi", "Ki"):
        factor = int(_SUFFIX[suffix])
        if size and size % factor == 0:
            return f"{size // factor}{suffix}"
    return str(size)


def round_up_to_gib(size: int) -> int:
    """What the in-tree provisioner asked Heketi for: whole GiB, at least one."""
    return max(1, -(-size // GiB)) * GiB
