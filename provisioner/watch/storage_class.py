"""StorageClass parameters of our provisioner, parsed strictly (pure).

As in the in-tree glusterfs provisioner, keys are case-insensitive and an unknown key is an error:
a typo must not silently provision a volume of another shape. Every error names the parameter.

==================  =========================================================================
``cluster``         Required. The gluster cluster (topology) that serves the class.
``volumetype``      ``replicate:N`` (default ``replicate:3``), ``arbiter`` (replica 3 arbiter 1),
                    ``disperse:D:R`` or ``none``; Heketi's spelling.
``gidmin/gidmax``   The range gids are allocated from (default 2000 to 2147483647).
``volumeoptions``   Comma-separated ``key value`` gluster options (allow-listed families only).
``pvsource``        ``csi`` (the project's CSI driver; default) or ``glusterfs`` (the in-tree
                    source, which only kubelets up to Kubernetes 1.25 can mount).
``csidriver``       The CSI driver name for ``pvsource: csi`` (default ``glusterfs.gluster.org``).
``zonechecking``    ``strict`` (every brick of a set in another zone) or ``none`` (best effort).
``snapfactor``      LVM thin pool size over brick size, 1 to 100 (Heketi's).
==================  =========================================================================
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import ValidationError

from provisioner.errors import InvalidStorageClass
from provisioner.events import models
from provisioner.events.fields import CSI_DRIVER, CSI_DRIVER_PATTERN

GID_MIN = 2000
GID_MAX = 2**31 - 1
_Bad = Callable[[str, str], "InvalidStorageClass"]
KNOWN = (
    "cluster",
    "volumetype",
    "gidmin",
    "gidmax",
    "volumeoptions",
    "pvsource",
    "csidriver",
    "zonechecking",
    "snapfactor",
)


@dataclass(frozen=True, slots=True)
class ClassParameters:
    cluster: str
    durability: models.DistributeSpec | models.ReplicateSpec | models.DisperseSpec
    gid_min: int = GID_MIN
    gid_max: int = GID_MAX
    options: dict[str, str] = field(default_factory=dict)
    source: Literal["glusterfs", "csi"] = "csi"
    csi_driver: str = CSI_DRIVER
    zone_checking: Literal["strict", "none"] = "none"
    snapshot_factor: float = 1.0


def class_parameters(class_name: str, raw: Mapping[str, str] | None) -> ClassParameters:
    params = {key.lower(): value for key, value in (raw or {}).items()}

    def bad(key: str, problem: str) -> InvalidStorageClass:
        return InvalidStorageClass(f"StorageClass {class_name}: parameter {key}: {problem}")

    unknown = sorted(set(params) - set(KNOWN))
    if unknown:
        raise bad(unknown[0], f"unknown parameter; known: {', '.join(KNOWN)}")
    if not params.get("cluster"):
        raise bad("cluster", "required: the gluster cluster that serves this class")
    gid_min = _integer(params, "gidmin", GID_MIN, bad)
    gid_max = _integer(params, "gidmax", GID_MAX, bad)
    if not GID_MIN <= gid_min <= gid_max <= GID_MAX:
        raise bad("gidmin", f"need {GID_MIN} <= gidMin <= gidMax <= {GID_MAX}, got {gid_min}..{gid_max}")
    source = params.get("pvsource", "csi")
    if source not in ("glusterfs", "csi"):
        raise bad("pvsource", f"{source!r} is not one of csi, glusterfs")
    driver = params.get("csidriver", CSI_DRIVER)
    if not re.fullmatch(CSI_DRIVER_PATTERN, driver):
        raise bad("csidriver", f"{driver!r} is not a CSI driver name (DNS-style, like {CSI_DRIVER})")
    zones = params.get("zonechecking", "none")
    if zones not in ("strict", "none"):
        raise bad("zonechecking", f"{zones!r} is not one of strict, none")
    try:
        factor = float(params.get("snapfactor", "1"))
    except ValueError:
        raise bad("snapfactor", "not a number") from None
    parameters = ClassParameters(
        cluster=params["cluster"],
        durability=_durability(params.get("volumetype", "replicate:3"), bad),
        gid_min=gid_min,
        gid_max=gid_max,
        options=_options(params.get("volumeoptions", ""), bad),
        source="csi" if source == "csi" else "glusterfs",
        csi_driver=driver,
        zone_checking="strict" if zones == "strict" else "none",
        snapshot_factor=factor,
    )
    # The request model holds every field to the same patterns an event must meet.
    try:
        models.ProvisionVolume(
            cluster=parameters.cluster,
            size=1,
            durability=parameters.durability,
            options=parameters.options,
            zone_checking=parameters.zone_checking,
            snapshot_factor=parameters.snapshot_factor,
        )
    except ValidationError as e:
        first = e.errors()[0]
        where = {"cluster": "cluster", "options": "volumeoptions", "snapshot_factor": "snapfactor"}
        raise bad(where.get(str(first["loc"][0]) if first["loc"] else "", "volumeoptions"), first["msg"]) from None
    return parameters


def _integer(params: Mapping[str, str], key: str, default: int, bad: _Bad) -> int:
    try:
        return int(params.get(key, default))
    except ValueError:
        raise bad(key, f"{params[key]!r} is not an integer") from None


def _durability(text: str, bad: _Bad) -> models.DistributeSpec | models.ReplicateSpec | models.DisperseSpec:
    parts = text.strip().lower().split(":")
    try:
        match parts:
            case ["none"]:
                return models.DistributeSpec()
            case ["arbiter"]:
                return models.ReplicateSpec(replica=3, arbiter=True)
            case ["replicate"]:
                return models.ReplicateSpec()
            case ["replicate", replica]:
                return models.ReplicateSpec(replica=int(replica))
            case ["disperse", data, redundancy]:
                return models.DisperseSpec(data=int(data), redundancy=int(redundancy))
    except (ValueError, ValidationError) as e:
        raise bad("volumetype", f"{text!r}: {e}") from None
    raise bad("volumetype", f"{text!r} is not none, replicate:N, arbiter or disperse:D:R")


def _options(text: str, bad: _Bad) -> dict[str, str]:
    options = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition(" ")
        if not value.strip():
            raise bad("volumeoptions", f"{item!r} is not 'key value'")
        if key.strip() in options:
            raise bad("volumeoptions", f"{key.strip()} is given twice")
        options[key.strip()] = value.strip()
    return options
