"""Why a FUSE mount failed and which storage server refused, read from the glusterfs client's log.

``mount.glusterfs`` only prints "Mounting glusterfs on X failed."; the cause is in the client's log
file, which the driver points at a file of its own per volume (``log-file=``, emptied before each
attempt) at ``log-level=INFO`` -- the level at which the client logs each volfile server it tried
and how that went. The lines matched here were captured from glusterfs 10.3 (the fixtures under
``tests/fixtures/csi/client-logs/`` are real logs).

The result has a ``reason`` from a closed vocabulary (a metric label and the event's reason text)
and, when the log names one, the ``server`` at fault: the one that refused the connection, or the
one that answered that there is no such volume. Messages are bounded: a log excerpt is at most a
few hundred characters, whatever the client wrote.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

REASONS = (
    "ServerUnreachable",  # no volfile server could be reached (refused, timed out, no route)
    "VolumeNotFound",  # a server answered, but has no such volume (or it is not started)
    "AuthRejected",  # a server or brick refused this client (auth.allow / auth.reject, ssl)
    "BricksUnreachable",  # the volfile came, but no brick could be reached: the volume is down
    "Timeout",  # the mount command did not finish within the mount timeout
    "HelperMissing",  # mount.glusterfs (glusterfs-client) is not installed
    "FuseUnavailable",  # /dev/fuse is missing or the fuse module is not loaded
    "Other",  # anything else; the message carries the log excerpt
)
"""The ``reason`` label values of ``provisioner_csi_mount_failures``."""

MAX_DETAIL = 300

_DISCONNECTED = re.compile(r"disconnected from remote-host: (?P<host>[A-Za-z0-9.:-]+)")
_CONNECT_FAILED = re.compile(r"connection to (?P<host>[A-Za-z0-9.-]+):\d+ failed")
_NEXT_SERVER = re.compile(r"connecting to next volfile server (?P<host>[A-Za-z0-9.-]+)")
_FETCH_FAILED = re.compile(r"failed to (?:fetch|get) (?:the )?'?volume file'?", re.IGNORECASE)
_FROM_SERVER = re.compile(r"from server (?P<host>[A-Za-z0-9.-]+)")
_AUTH = re.compile(r"AUTH_FAILED|Authentication failed|not authorized|SSL (?:connect|accept) error", re.IGNORECASE)
_NO_BRICKS = re.compile(r"failed to get the port number for remote subvolume|All subvolumes are down", re.I)
_CLIENT = re.compile(r" 0-(?P<client>[A-Za-z0-9_-]+-client-\d+): ")
_GRAPH_VOLUME = re.compile(r"^\s*\d+: volume (?P<client>[A-Za-z0-9_-]+-client-\d+)\s*$")
_GRAPH_HOST = re.compile(r"^\s*\d+:\s+option remote-host (?P<host>[A-Za-z0-9.-]+)\s*$")
_SEVERE = re.compile(r"\] [EC] \[")


@dataclass(frozen=True, slots=True)
class Failure:
    reason: str
    server: str | None
    detail: str

    def describe(self) -> str:
        who = f"storage server {self.server}" if self.server else "the storage servers"
        return {
            "ServerUnreachable": f"{who} refused or did not answer the volfile request",
            "VolumeNotFound": f"{who} answered that it has no such volume",
            "AuthRejected": f"{who} refused this client (auth.allow/auth.reject or TLS)",
            "BricksUnreachable": f"no brick answered (first refused by {who}): the volume is stopped or its "
            "brick processes are down",
            "Timeout": f"the glusterfs mount did not finish in time (last tried: {who})",
            "HelperMissing": "mount.glusterfs is not installed on the node",
            "FuseUnavailable": "/dev/fuse is not available on the node",
        }.get(self.reason, "the glusterfs client failed")


def classify(
    *, output: str, log: str, servers: Sequence[str], timed_out: bool = False, exit_status: int = 1
) -> Failure:
    """The failure of one FUSE mount attempt from the mount command's output and the client log.

    The checks run from the most specific cause to the least: a client that got the volfile from a
    backup server after the first one refused, and then found no brick, failed because of the bricks.
    """
    text = f"{log}\n{output}"
    if timed_out:
        return Failure("Timeout", _last_tried(log, servers), _excerpt(log or output))
    if "unknown filesystem type" in output or (exit_status != 0 and "mount.glusterfs" in output and _missing(output)):
        return Failure("HelperMissing", None, _excerpt(output))
    if "fuse: device not found" in text or ("/dev/fuse" in text and "No such file" in text):
        return Failure("FuseUnavailable", None, _excerpt(text))
    bricks = _brick_hosts(log)
    if _AUTH.search(log):
        server = _brick_of(log, _AUTH, bricks) or _last_tried(log, servers)
        return Failure("AuthRejected", server, _excerpt_of(log, _AUTH, first=True))
    if _FETCH_FAILED.search(log):
        server = _host_near(log, _FETCH_FAILED, _FROM_SERVER) or _last_tried(log, servers)
        return Failure("VolumeNotFound", server, _excerpt_of(log, _FETCH_FAILED))
    if _NO_BRICKS.search(log):
        detail = _excerpt_of(log, _NO_BRICKS, first=True)
        return Failure("BricksUnreachable", _brick_of(log, _NO_BRICKS, bricks), detail)
    refused = _refusing(log)
    if refused or "Exhausted all volfile servers" in log:
        return Failure("ServerUnreachable", refused[0] if refused else None, _excerpt_of(log, _DISCONNECTED))
    return Failure("Other", None, _excerpt(_severe_lines(log) or output or log))


def _brick_hosts(log: str) -> dict[str, str]:
    """Client translator name -> brick host, from the "Final graph" the client logs at INFO."""
    hosts: dict[str, str] = {}
    current: str | None = None
    for line in log.splitlines():
        volume = _GRAPH_VOLUME.match(line)
        if volume:
            current = volume.group("client")
            continue
        host = _GRAPH_HOST.match(line)
        if host and current is not None:
            hosts.setdefault(current, host.group("host"))
    return hosts


def _brick_of(log: str, marker: re.Pattern[str], bricks: dict[str, str]) -> str | None:
    """The brick host of the first client translator whose log line matches ``marker``."""
    for line in log.splitlines():
        if marker.search(line):
            client = _CLIENT.search(line)
            if client and client.group("client") in bricks:
                return bricks[client.group("client")]
    return None


def _missing(output: str) -> bool:
    return "not found" in output or "No such file" in output


def _refusing(log: str) -> list[str]:
    """Servers that dropped or refused the volfile connection, in the order the client tried them."""
    hosts: list[str] = []
    for line in log.splitlines():
        for pattern in (_DISCONNECTED, _CONNECT_FAILED):
            m = pattern.search(line)
            if m and m.group("host") not in hosts:
                hosts.append(m.group("host"))
    return hosts


def _last_tried(log: str, servers: Sequence[str]) -> str | None:
    """The volfile server the client asked last: the first one, if it never moved on."""
    tried = [m.group("host") for m in _NEXT_SERVER.finditer(log)]
    return tried[-1] if tried else (servers[0] if servers else None)


def _host_near(log: str, marker: re.Pattern[str], pattern: re.Pattern[str]) -> str | None:
    for line in log.splitlines():
        if marker.search(line):
            m = pattern.search(line)
            if m:
                return m.group("host")
    return None


def _severe_lines(log: str) -> str:
    return "\n".join(line for line in log.splitlines() if _SEVERE.search(line))


def _excerpt_of(log: str, marker: re.Pattern[str], *, first: bool = False) -> str:
    """The first or last log line matching ``marker`` (the one that says most about this cause)."""
    lines = [line for line in log.splitlines() if marker.search(line)]
    return _excerpt(lines[0 if first else -1] if lines else log)


def _excerpt(text: str) -> str:
    """The message part of the last meaningful line, bounded to MAX_DETAIL characters."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1]
    # "[time] E [MSGID: n] [file.c:line:func] 0-xlator: message" -> "0-xlator: message"
    message = re.sub(r"^\[[^\]]*\] [A-Z] (\[[^\]]*\] )*", "", line)
    return message[:MAX_DETAIL]
