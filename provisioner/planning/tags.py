"""Heketi's tags in placement: which devices a brick may go to.

A node's tags apply to each of its devices; a device's own tag of the same key wins. Two things
read them:

* a volume's ``device_tag_match`` (Heketi's ``user.heketi.device-tag-match``): ``key=value`` keeps
  its bricks on devices whose tag ``key`` is ``value``; ``key!=value`` on devices where it is not
  (a device without the tag matches);
* the ``arbiter`` tag: ``supported`` (the default) takes any brick, ``required`` only arbiter bricks,
  ``disabled`` no arbiter brick.

``eligible`` narrows a cluster to the devices a brick of one role may use; it returns the cluster
itself when nothing is left out, so the allocator keeps its cached index for untagged clusters.
Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from provisioner.domain import Cluster, Device, Node
from provisioner.events.fields import TAG_MATCH_PATTERN

ARBITER_TAG = "arbiter"


@dataclass(frozen=True, slots=True)
class TagMatch:
    key: str
    value: str
    negated: bool = False

    @classmethod
    def parse(cls, text: str) -> TagMatch:
        """``key=value`` or ``key!=value``; ValueError naming the expected form otherwise."""
        found = re.fullmatch(TAG_MATCH_PATTERN, text)
        if found is None:
            raise ValueError(f"device tag match {text[:80]!r}: write key=value or key!=value")
        key, operator, value = found.groups()
        return cls(key=key, value=value, negated=operator == "!=")

    def matches(self, tags: dict[str, str]) -> bool:
        return (tags.get(self.key) == self.value) != self.negated

    def __str__(self) -> str:
        return f"{self.key}{'!=' if self.negated else '='}{self.value}"


def device_tags(node: Node, device: Device) -> dict[str, str]:
    return {**dict(node.tags), **dict(device.tags)}


def takes(node: Node, device: Device, match: TagMatch | None, *, arbiter: bool) -> bool:
    """Whether a brick (an arbiter brick with ``arbiter``) may be placed on ``device``."""
    tags = device_tags(node, device)
    role = tags.get(ARBITER_TAG, "supported")
    if role == ("disabled" if arbiter else "required"):
        return False
    return match is None or match.matches(tags)


def is_tagged(cluster: Cluster) -> bool:
    """Whether any node or device of the cluster carries a tag (else ``eligible`` never narrows)."""
    return any(n.tags or any(d.tags for d in n.devices) for n in cluster.nodes)


def eligible(cluster: Cluster, match: TagMatch | None, *, arbiter: bool) -> Cluster:
    """``cluster`` with only the devices a brick of that role may use (the same object if all may)."""
    if match is None and not is_tagged(cluster):
        return cluster
    nodes = []
    narrowed = False
    for node in cluster.nodes:
        devices = tuple(d for d in node.devices if takes(node, d, match, arbiter=arbiter))
        narrowed = narrowed or len(devices) != len(node.devices)
        nodes.append(dataclasses.replace(node, devices=devices) if len(devices) != len(node.devices) else node)
    return dataclasses.replace(cluster, nodes=tuple(nodes)) if narrowed else cluster
