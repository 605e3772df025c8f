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
_BRICK_HOST = re.compile(r"(?:remote-host|remote_host)[=: ]+(?P<host>[A-Za-z0-9.-]+)")
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
            "VolumeNotFound": f"{who} answered that the volume does not exist or is not started",
            "AuthRejected": f"{who} refused this client (auth.allow/auth.reject or TLS)",
            "BricksUnreachable": f"no brick of the volume could be reached (last tried: {who})",
            "Timeout": "the glusterfs mount did not finish in time",
            "HelperMissing": "mount.glusterfs is not installed on the node",
            "FuseUnavailable": "/dev/fuse is not available on the node",
        }.get(self.reason, "the glusterfs client failed")


def classify(
    *, output: str, log: str, servers: Sequence[str], timed_out: bool = False, exit_status: int = 1
) -> Failure:
    """The failure of one FUSE mount attempt from the mount command's output and the client log."""
    text = f"{log}\n{output}"
    if timed_out:
        return Failure("Timeout", _last_tried(log, servers), _excerpt(log or output))
    if "unknown filesystem type" in output or (
        exit_status in (32, 1) and "mount.glusterfs" in output and _missing(output)
    ):
        return Failure("HelperMissing", None, _excerpt(output))
    if "fuse: device not found" in text or ("/dev/fuse" in text and "No such file" in text):
        return Failure("FuseUnavailable", None, _excerpt(text))
    if _AUTH.search(log):
        return Failure("AuthRejected", _host_near(log, _AUTH) or _last_tried(log, servers), _excerpt_of(log, _AUTH))
    if _FETCH_FAILED.search(log):
        host = _host_near(log, _FETCH_FAILED, pattern=_FROM_SERVER) or _answering(log, servers)
        return Failure("VolumeNotFound", host, _excerpt_of(log, _FETCH_FAILED))
    refused = _refusing(log)
    if refused or "Exhausted all volfile servers" in log:
        return Failure("ServerUnreachable", refused[0] if refused else None, _excerpt_of(log, _DISCONNECTED))
    if _NO_BRICKS.search(log):
        return Failure(
            "BricksUnreachable", _host_near(log, _NO_BRICKS, pattern=_BRICK_HOST), _excerpt_of(log, _NO_BRICKS)
        )
    return Failure("Other", None, _excerpt(_severe_lines(log) or output or log))


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
    tried = [m.group("host") for m in _NEXT_SERVER.finditer(log)]
    return tried[-1] if tried else (servers[0] if servers else None)


def _answering(log: str, servers: Sequence[str]) -> str | None:
    """The server that answered: the last one tried (the first, if the client never moved on)."""
    return _last_tried(log, servers)


def _host_near(log: str, marker: re.Pattern[str], *, pattern: re.Pattern[str] = _BRICK_HOST) -> str | None:
    for line in log.splitlines():
        if marker.search(line):
            m = pattern.search(line)
            if m:
                return m.group("host")
    return None


def _severe_lines(log: str) -> str:
    return "\n".join(line for line in log.splitlines() if _SEVERE.search(line))


def _excerpt_of(log: str, marker: re.Pattern[str]) -> str:
    lines = [line for line in log.splitlines() if marker.search(line)]
    return _excerpt(lines[-1] if lines else log)


def _excerpt(text: str) -> str:
    """The message part of the last meaningful line, bounded to MAX_DETAIL characters."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1]
    # "[time] E [MSGID: n] [file.c:line:func] 0-xlator: message" -> "0-xlator: message"
    message = re.sub(r"^\[[^\]]*\] [A-Z] (\[[^\]]*\] )*", "", line)
    return message[:MAX_DETAIL]
