"""A corpus of hostile values, put into every string of every request that reaches a node or Kubernetes.

Each value either is refused when the request is read (a dead letter with its reason), or, when it is
accepted, leaves the shape of every command the request runs unchanged: no word of a node command
that starts with ``-`` is one a hostile value made, and no word after the gluster CLI's own options
starts with ``-`` at all (the CLI reads a ``--word`` anywhere in its argv as its own option:
``--log-file=`` appends to any file as root, ``--remote-host=`` sends the call to another glusterd).
Names that become Kubernetes object names, namespaces or label values pass the API server's own rules.
"""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from provisioner.events import catalog, models
from provisioner.events.envelope import new_event
from provisioner.executor import Argv
from tests.fakes import World, default_topology

GiB = 1024**3
UID = "0b7c3f2e-4d1a-4c6b-9e8f-1a2b3c4d5e6f"

HOSTILE = [
    "--log-file=/etc/fstab",
    "--remote-host=10.9.9.9",
    "-rf",
    "-",
    "--",
    "-o",
    "a b",
    "a\tb",
    "a\nb",
    "x\n--remote-host=10.9.9.9",
    "a;reboot",
    "a&&reboot",
    "a|reboot",
    "$(reboot)",
    "`reboot`",
    "${IFS}",
    "'",
    '"',
    "\\",
    "a\x00b",
    "*",
    "?",
    "~root",
    "../../etc/passwd",
    "/etc/../../root",
    "/dev/sda --force",
    "a,--log-file=/x",
    "a=--remote-host=x",
    "kube-system/kube-dns",
    "KUBE-SYSTEM",
    "ünïcödé",
    "\u202e",
    "",
    " ",
    "x" * 300,
    "a" * 64,
]

# One valid request of each type that reaches the nodes or Kubernetes; every string in it gets each value.
CLAIM = {"namespace": "apps", "name": "data", "uid": UID}
BASE: dict[str, dict[str, Any]] = {
    catalog.PROVISION_REQUESTED: {
        "cluster": "dev",
        "size": GiB,
        "name": "v1",
        "options": {"performance.read-ahead": "off"},
        "labels": {"team": "a"},
        "kubernetes": {
            "claim": CLAIM,
            "storage_class": "gold",
            "provisioner": "gluster.org/glusterfs",
            "mount_options": ["log-level=WARNING", "acl"],
            "csi_driver": "glusterfs.gluster.org",
        },
    },
    catalog.DELETE_REQUESTED: {
        "cluster": "dev",
        "name": "v0",
        "kubernetes": {"persistent_volume": "pvc-x", "namespace": "apps", "service": "glusterfs-dynamic-x"},
    },
    catalog.EXPAND_REQUESTED: {
        "cluster": "dev",
        "name": "v0",
        "size": 2 * GiB,
        "kubernetes": {"persistent_volume": "pvc-x", "claim": CLAIM},
    },
    catalog.NODE_ADD_REQUESTED: {
        "cluster": "dev",
        "node": {
            "node": {"hostnames": {"manage": ["10.0.0.5"], "storage": ["10.0.0.5"]}, "tags": {"rack": "r1"}},
            "devices": [{"name": "/srv/devices/dev1", "backend": "file", "capacity": 100 * GiB}],
        },
    },
    catalog.DEVICE_ADD_REQUESTED: {
        "cluster": "dev",
        "host": "10.0.0.1",
        "device": {"name": "/dev/vdb", "backend": "lvm", "tags": {"ssd": "yes"}},
    },
    catalog.DEVICE_REMOVE_REQUESTED: {
        "cluster": "dev",
        "host": "10.0.0.1",
        "name": "/srv/devices/dev1",
        "evacuate": True,
    },
    catalog.NODE_REMOVE_REQUESTED: {"cluster": "dev", "host": "10.0.0.3", "evacuate": True},
    catalog.SNAPSHOT_CREATE_REQUESTED: {"cluster": "dev", "volume": "v0", "name": "monday"},
    catalog.SNAPSHOT_DELETE_REQUESTED: {"cluster": "dev", "name": "s0"},
    catalog.CLONE_REQUESTED: {"cluster": "dev", "name": "copy", "from_snapshot": "s0", "gid": 2001},
}
ON_LVM = {catalog.SNAPSHOT_CREATE_REQUESTED, catalog.SNAPSHOT_DELETE_REQUESTED, catalog.CLONE_REQUESTED}
"""Snapshots need thin LVs: these run in a world of lvm devices, where v0 has a snapshot s0."""
SKIP = {("cluster",)}  # the cluster must be the message key; a hostile one is refused by the lane (tests/unit/bus)


def slots(document: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], bool]]:
    """Every string of ``document``: (path, is a mapping key)."""
    if isinstance(document, dict):
        for key, value in document.items():
            yield (*path, key), True
            yield from slots(value, (*path, key))
    elif isinstance(document, list):
        for i, value in enumerate(document):
            yield from slots(value, (*path, i))
    elif isinstance(document, str):
        yield path, False


def with_value(document: Any, path: tuple[str | int, ...], is_key: bool, value: str) -> Any:
    copied = copy.deepcopy(document)
    parent = copied
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if is_key:
        assert isinstance(last, str)
        parent[value] = parent.pop(last)
    else:
        parent[last] = value
    return copied


CASES = [
    (type_, path, is_key)
    for type_, document in BASE.items()
    for path, is_key in slots(document)
    if path not in SKIP
    and not (is_key and path[-1] in ("cluster", "size", "name", "node", "host", "device"))
    and not (is_key and len(path) == 1)  # a field name: extra fields are refused (tests/unit/test_events.py)
]


def words_of(argv: Argv) -> list[str]:
    return [w for w in argv if w.startswith("-")]


async def run(type_: str, data: models.Model) -> tuple[str, list[Argv]]:
    """The node commands that ``data`` makes, in a world with cluster ``dev`` and volume v0.

    The ``kubernetes`` block is left out here (this world has no API server; its names are checked
    against the API server's rules below): with it, the request would fail before any node work."""
    topology = default_topology(4, devices=2)
    if type_ in ON_LVM:
        document = topology.model_dump()
        for node in document["nodes"]:
            node["devices"] = [{"name": d["name"]} for d in node["devices"]]
        topology = models.LoadTopology.model_validate(document)
    world = World(topology=topology)
    await world.load()
    await world.provision(name="v0")
    if type_ in ON_LVM:
        made = models.CreateSnapshot(cluster="dev", volume="v0", name="s0")
        await world.handle(new_event(catalog.SNAPSHOT_CREATE_REQUESTED, made, source="/hostile"))
    before = len(world.nodes.calls)
    if "kubernetes" in type(data).model_fields:
        data = data.model_copy(update={"kubernetes": None})
    outcome = await world.handle(new_event(type_, data, source="/hostile"))
    return outcome.result.type, [argv for _, argv in world.nodes.calls[before:]]


def option_words() -> set[str]:
    """Every ``-`` word the valid requests' commands contain: the only ones a command may have."""

    async def collect() -> set[str]:
        found: set[str] = set()
        for type_, document in BASE.items():
            result, commands = await run(type_, catalog.REQUEST_TYPES[type_].model_validate(document))
            assert result == catalog.succeeded_type(type_), f"the valid {type_} must succeed: {result} {commands[-3:]}"
            for argv in commands:
                found.update(words_of(argv))
        return found

    return asyncio.run(collect())


OPTION_WORDS = option_words()


@pytest.mark.parametrize(("type_", "path", "is_key"), CASES, ids=lambda c: str(c))
async def test_a_hostile_value_is_refused_or_changes_no_command(
    type_: str, path: tuple[str | int, ...], is_key: bool
) -> None:
    model = catalog.REQUEST_TYPES[type_]
    for value in HOSTILE:
        document = with_value(BASE[type_], path, is_key, value)
        try:
            data = model.model_validate(document)
        except ValidationError:
            continue
        _, commands = await run(type_, data)
        for argv in commands:
            made = [w for w in words_of(argv) if w not in OPTION_WORDS]
            assert not made, f"{value!r} at {path} made option words {made} in {argv}"
            if argv[0] == "gluster":
                assert not [w for w in argv[4:] if w.startswith("-")], f"{value!r} at {path}: {argv}"
            values = argv[3:] if argv[:2] == ("sh", "-c") else argv  # a fixed script, then its arguments
            assert all("\x00" not in w and "\n" not in w for w in values), f"{value!r} at {path}: {argv}"


KUBE_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # RFC 1123 label: namespaces
KUBE_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")  # object names


@pytest.mark.parametrize(
    ("model", "field", "rule", "limit"),
    [
        (models.ClaimRef, "namespace", KUBE_LABEL, 63),
        (models.ClaimRef, "name", KUBE_SUBDOMAIN, 253),
        (models.ClaimObjects, "namespace", KUBE_LABEL, 63),
        (models.ClaimObjects, "service", KUBE_SUBDOMAIN, 253),
        (models.ClaimObjects, "persistent_volume", KUBE_SUBDOMAIN, 253),
        (models.ClaimVolume, "storage_class", KUBE_SUBDOMAIN, 253),
    ],
)
def test_kubernetes_names_that_pass_are_names_the_api_server_accepts(
    model: type[models.Model], field: str, rule: re.Pattern[str], limit: int
) -> None:
    valid = {
        models.ClaimRef: CLAIM,
        models.ClaimObjects: BASE[catalog.DELETE_REQUESTED]["kubernetes"],
        models.ClaimVolume: BASE[catalog.PROVISION_REQUESTED]["kubernetes"],
    }[model]
    for value in [*HOSTILE, "kube-system", "a" * 63, "a" * 64, "a." * 127]:
        try:
            model.model_validate({**valid, field: value})
        except ValidationError:
            continue
        assert rule.match(value) and len(value) <= limit, f"{model.__name__}.{field} took {value!r}"


def test_the_corpus_reaches_every_string_of_every_request() -> None:
    assert len(CASES) >= 25
    assert {type_ for type_, _, _ in CASES} == set(BASE)
