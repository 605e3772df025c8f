"""The PV's ``volumeAttributes``: exactly what NodeStageVolume needs to mount a gluster volume.

The daemon writes them into ``spec.csi.volumeAttributes`` of every PV it creates (call
``volume_attributes``); kubelet hands them back unchanged as the ``volume_context`` of NodeStage and
NodePublish. Two keys, both required:

``volume``
    The gluster volume name (``VOLUME_NAME_PATTERN``): the FUSE mount source is ``<server>:/<volume>``.
``servers``
    Comma-separated storage hosts (``HOST_PATTERN`` each, 1 to 16 of them, no repeats). The first is the
    volfile server the client asks for the volume layout; the others become
    ``backup-volfile-servers``, so a mount still works while the first server is down.

The volume id is not an attribute: it is the PV's ``volumeHandle`` (32 hex digits), which kubelet
passes as ``volume_id``. The cluster id, the brick list and the gid are not needed to mount (the
client reads the bricks from the volfile; gid ownership is on the bricks), so they are not here:
every attribute is a promise that the node plugin reads it.

Kubelet adds its own keys when the CSIDriver asks for pod info (``csi.storage.k8s.io/pod.name`` and
so on, see ``POD_INFO_KEYS``); those are accepted and used for events, any other unknown key is
refused, so that a typo in a hand-written PV fails at the first mount instead of being ignored.

The patterns are copies of ``provisioner.events.fields`` (the event schema that admits these names
into the system in the first place); the CSI package keeps its own copy so it imports nothing but
``provisioner.errors`` from the daemon.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from provisioner.csi.errors import InvalidArgument

VOLUME = "volume"
SERVERS = "servers"
ATTRIBUTE_KEYS = (VOLUME, SERVERS)

POD_NAME = "csi.storage.k8s.io/pod.name"
POD_NAMESPACE = "csi.storage.k8s.io/pod.namespace"
POD_UID = "csi.storage.k8s.io/pod.uid"
SERVICE_ACCOUNT = "csi.storage.k8s.io/serviceAccount.name"
EPHEMERAL = "csi.storage.k8s.io/ephemeral"
POD_INFO_KEYS = (POD_NAME, POD_NAMESPACE, POD_UID, SERVICE_ACCOUNT, EPHEMERAL)
"""What kubelet adds to ``volume_context`` at NodePublish when the CSIDriver has ``podInfoOnMount``."""

VOLUME_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")
HOST_PATTERN = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
VOLUME_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
MAX_SERVERS = 16


@dataclass(frozen=True, slots=True)
class VolumeSource:
    """A validated mount source: ``servers[0]:/volume``, backups ``servers[1:]``."""

    volume: str
    servers: tuple[str, ...]

    @property
    def spec(self) -> str:
        """The mount source argument of ``mount -t glusterfs``."""
        return f"{self.servers[0]}:/{self.volume}"

    @property
    def backups(self) -> tuple[str, ...]:
        return self.servers[1:]


def volume_attributes(volume_name: str, servers: Sequence[str]) -> dict[str, str]:
    """The ``volumeAttributes`` of a PV for ``volume_name`` served by ``servers`` (mount host first).

    Pure and strict: raises ``ValueError`` for a name or host the node plugin would refuse, so a PV
    that could never mount is never written.
    """
    for host in servers:
        if not HOST_PATTERN.fullmatch(host):
            raise _BadAttribute(SERVERS, f"{_shown(host)} is not a host name or IPv4 address")
    source = _source(volume_name, ",".join(servers), field_prefix="")
    return {VOLUME: source.volume, SERVERS: ",".join(source.servers)}


def parse_volume_context(context: Mapping[str, str]) -> VolumeSource:
    """The mount source from a NodeStage/NodePublish ``volume_context``; InvalidArgument names the key."""
    unknown = sorted(set(context) - set(ATTRIBUTE_KEYS) - set(POD_INFO_KEYS))
    if unknown:
        raise InvalidArgument(
            f"volume_context[{unknown[0]}]", f"unknown attribute; the driver reads {', '.join(ATTRIBUTE_KEYS)}"
        )
    for key in ATTRIBUTE_KEYS:
        if not context.get(key):
            raise InvalidArgument(f"volume_context[{key}]", "required attribute is missing or empty")
    try:
        return _source(context[VOLUME], context[SERVERS], field_prefix="volume_context")
    except _BadAttribute as e:
        raise InvalidArgument(e.field, e.problem) from None


def valid_volume_id(volume_id: str) -> bool:
    return VOLUME_ID_PATTERN.fullmatch(volume_id) is not None


class _BadAttribute(ValueError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def _source(volume: str, servers: str, *, field_prefix: str) -> VolumeSource:
    def field(key: str) -> str:
        return f"{field_prefix}[{key}]" if field_prefix else key

    if not VOLUME_NAME_PATTERN.fullmatch(volume) or volume.lower() == "all":
        raise _BadAttribute(field(VOLUME), f"{_shown(volume)} is not a gluster volume name")
    hosts = tuple(servers.split(","))
    if len(hosts) > MAX_SERVERS:
        raise _BadAttribute(field(SERVERS), f"{len(hosts)} servers; at most {MAX_SERVERS}")
    for host in hosts:
        if not HOST_PATTERN.fullmatch(host):
            raise _BadAttribute(field(SERVERS), f"{_shown(host)} is not a host name or IPv4 address")
    if len(set(hosts)) != len(hosts):
        raise _BadAttribute(field(SERVERS), "a server is listed twice")
    return VolumeSource(volume=volume, servers=hosts)


def _shown(value: str) -> str:
    """A bounded, printable rendering of a refused value for an error message."""
    return repr(value[:80] + ("…" if len(value) > 80 else ""))
