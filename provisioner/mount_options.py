"""The glusterfs mount options a PV may carry: names on an allow-list, values matching closed patterns.

One vocabulary for both ends: the request models refuse a claim's mount options that are not on it
(``events.fields.MountOption``), and the CSI node plugin vets them again before they reach
``mount.glusterfs`` (``csi.options``), a shell script that splits its ``-o`` string on commas and
unquoted whitespace. No value may start with ``-`` or hold anything but letters, digits, ``.`` and
``_``; options that name files, mount something else or loosen the node's defaults are refused,
each with the reason. Pure: no I/O.
"""

from __future__ import annotations

import re

_NUMBER = r"(0|[1-9][0-9]{0,8})(\.[0-9]{1,6})?"
_INTEGER = r"(0|[1-9][0-9]{0,9})"
_BOOL = r"(yes|no|on|off|true|false|enable|disable)"

FLAGS = frozenset(
    {
        "ro",
        "rw",
        "acl",
        "selinux",
        "worm",
        "auto_unmount",
        "fopen-keep-cache",
        "resolve-gids",
        "noatime",
        "nodiratime",
        "relatime",
        "norelatime",
        "strictatime",
        "nostrictatime",
        "nodev",
        "nosuid",
        "noexec",
        "_netdev",
    }
)
"""Options without a value that ``mount.glusterfs`` 10 understands and that only tune the client."""

VALUED: dict[str, re.Pattern[str]] = {
    name: re.compile(pattern)
    for name, pattern in {
        "log-level": r"(TRACE|DEBUG|INFO|WARNING|ERROR|CRITICAL|NONE)",
        "direct-io-mode": r"(enable|disable)",
        "attribute-timeout": _NUMBER,
        "entry-timeout": _NUMBER,
        "negative-timeout": _NUMBER,
        "gid-timeout": _NUMBER,
        "background-qlen": _INTEGER,
        "congestion-threshold": _INTEGER,
        "lru-limit": _INTEGER,
        "invalidate-limit": _INTEGER,
        "fetch-attempts": r"[1-9][0-9]?",
        "reader-thread-count": r"[1-9][0-9]?",
        "attr-times-granularity": _INTEGER,
        "use-readdirp": _BOOL,
        "kernel-writeback-cache": _BOOL,
        "fopen-keep-cache": _BOOL,
        "fuse-flush-handle-interrupt": _BOOL,
        "event-history": _BOOL,
    }.items()
}
"""Options with a value, each with the closed pattern its value must match in full."""

REFUSED = {
    "log-file": "names a file on the node; the driver sets its own log file",
    "dump-fuse": "names a file on the node",
    "volfile-id": "would mount another volume than the PV's `volume` attribute",
    "volume-name": "would mount another volume than the PV's `volume` attribute",
    "volume-id": "would mount another volume than the PV's `volume` attribute",
    "subdir-mount": "would mount a part of the volume the PV does not name",
    "server-port": "the servers are the PV's `servers` attribute",
    "transport": "only tcp is supported, and it is the default",
    "backup-volfile-servers": "set by the driver from the PV's `servers` attribute",
    "backupvolfile-server": "set by the driver from the PV's `servers` attribute",
    "xlator-option": "a raw translator option is not a mount option the driver can vet",
    "fuse-mountopts": "raw kernel mount options are not something the driver can vet",
    "context": "SELinux labels are set by the container runtime, not in mountOptions",
    "fscontext": "SELinux labels are set by the container runtime, not in mountOptions",
    "defcontext": "SELinux labels are set by the container runtime, not in mountOptions",
    "rootcontext": "SELinux labels are set by the container runtime, not in mountOptions",
    "suid": "loosens the node's defaults; use the volume without it",
    "dev": "loosens the node's defaults; use the volume without it",
    "exec": "loosens the node's defaults; use the volume without it",
}

_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,40}")
_VALUE_CHARS = re.compile(r"[A-Za-z0-9._]{1,32}")


def problem(option: str) -> str | None:
    """Why ``option`` (``name`` or ``name=value``) is not allowed, or None when it is."""
    name, eq, value = option.partition("=")
    shown = repr(option[:60])
    if not option:
        return "an empty mount option"
    if not _NAME.fullmatch(name):
        return f"{shown} is not a mount option name"
    if name in REFUSED:
        return f"{name} is not allowed: {REFUSED[name]}"
    if not eq:
        return None if name in FLAGS else f"{name} is not an allowed mount option ({allowed_text()})"
    if value.startswith("-") or not _VALUE_CHARS.fullmatch(value):
        return f"the value of {name} is not allowed: {value[:40]!r}"
    pattern = VALUED.get(name)
    if pattern is None:
        return f"{name}=... is not an allowed mount option ({allowed_text()})"
    if not pattern.fullmatch(value):
        return f"{value!r} is not a valid value of {name} (expected {pattern.pattern})"
    return None


def allowed_text() -> str:
    return "allowed: " + ", ".join(sorted(FLAGS)) + ", " + ", ".join(f"{n}=" for n in sorted(VALUED))
