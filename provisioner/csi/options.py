"""Mount options and the argv of every mount command (pure; golden-tested).

The PV's ``mountOptions`` reach the driver as ``mount_flags`` and end up on the command line of
``mount.glusterfs`` -- a shell script that splits its ``-o`` string on commas and unquoted
whitespace and expands globs. So nothing from a request becomes an option unless its name is on
the allow-list below and its value matches that option's own closed pattern; a value that starts
with ``-``, or holds anything but letters, digits, ``.`` and ``_``, is refused outright. The source
and target follow ``--``, so even they can never be read as options.

Refused on purpose (the message says why):

* options naming files (``log-file``, ``dump-fuse``): the driver runs as root on the node;
* options that change what is mounted (``volfile-id``, ``volume-name``, ``volume-id``,
  ``subdir-mount``, ``server-port``, ``transport``): the PV's ``volume``/``servers`` say that;
* ``backup-volfile-servers``/``backupvolfile-server``: the driver derives them from ``servers``;
* raw pass-throughs (``xlator-option``, ``fuse-mountopts``, SELinux ``context=...``);
* ``suid``/``dev``/``exec``-style loosening flags: the ``no...`` forms are accepted instead.

The driver adds ``log-file`` (its own per-volume file, parsed when a mount fails) and a
``log-level`` unless the PV chose one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from provisioner.csi.attributes import VolumeSource
from provisioner.csi.errors import InvalidArgument

Argv = tuple[str, ...]

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
MAX_FLAGS_BYTES = 4096  # the CSI spec's limit for mount_flags


@dataclass(frozen=True, slots=True)
class MountOptions:
    """Vetted client options, in the order given, without duplicates."""

    options: tuple[str, ...] = ()

    @property
    def read_only(self) -> bool:
        return "ro" in self.options

    def has(self, name: str) -> bool:
        return any(o == name or o.startswith(name + "=") for o in self.options)


def vet(mount_flags: Sequence[str], *, field: str = "volume_capability.mount.mount_flags") -> MountOptions:
    """The allowed options among ``mount_flags``, or InvalidArgument naming the first refused one."""
    if sum(len(f) for f in mount_flags) > MAX_FLAGS_BYTES:
        raise InvalidArgument(field, f"more than {MAX_FLAGS_BYTES} bytes of mount options")
    vetted: list[str] = []
    for entry in mount_flags:
        for option in entry.split(","):
            vetted_option = _vet_one(option.strip(), field)
            if vetted_option not in vetted:
                vetted.append(vetted_option)
    if "ro" in vetted and "rw" in vetted:
        raise InvalidArgument(field, "both ro and rw given")
    return MountOptions(tuple(vetted))


def _vet_one(option: str, field: str) -> str:
    name, eq, value = option.partition("=")
    shown = repr(option[:60])
    if not option:
        raise InvalidArgument(field, "an empty mount option")
    if not _NAME.fullmatch(name):
        raise InvalidArgument(field, f"{shown} is not a mount option name")
    if name in REFUSED:
        raise InvalidArgument(field, f"{name} is not allowed: {REFUSED[name]}")
    if not eq:
        if name in FLAGS:
            return name
        raise InvalidArgument(field, f"{name} is not an allowed mount option ({_allowed_text()})")
    if value.startswith("-") or not _VALUE_CHARS.fullmatch(value):
        raise InvalidArgument(field, f"the value of {name} is not allowed: {value[:40]!r}")
    pattern = VALUED.get(name)
    if pattern is None:
        raise InvalidArgument(field, f"{name}=... is not an allowed mount option ({_allowed_text()})")
    if not pattern.fullmatch(value):
        raise InvalidArgument(field, f"{value!r} is not a valid value of {name} (expected {pattern.pattern})")
    return f"{name}={value}"


def _allowed_text() -> str:
    return "allowed: " + ", ".join(sorted(FLAGS)) + ", " + ", ".join(f"{n}=" for n in sorted(VALUED))


def client_options(
    source: VolumeSource, vetted: MountOptions, *, read_only: bool, log_file: Path, log_level: str
) -> tuple[str, ...]:
    """The full ``-o`` list of a FUSE mount: the vetted ones plus what the driver sets itself."""
    options = [o for o in vetted.options if o not in ("ro", "rw")]
    if read_only or vetted.read_only:
        options.insert(0, "ro")
    if not vetted.has("log-level"):
        options.append(f"log-level={log_level}")
    options.append(f"log-file={log_file}")
    if source.backups:
        options.append("backup-volfile-servers=" + ":".join(source.backups))
    return tuple(options)


def fuse_mount(source: VolumeSource, target: Path, options: Iterable[str]) -> Argv:
    """``mount -t glusterfs``: ``-n`` keeps util-linux from writing /run/mount/utab (mountinfo is the record)."""
    return ("mount", "-n", "-t", "glusterfs", "-o", ",".join(options), "--", source.spec, str(target))


def bind_mount(source: Path, target: Path) -> Argv:
    return ("mount", "-n", "--bind", "--", str(source), str(target))


def remount_read_only(target: Path) -> Argv:
    """A bind mount is made read-only by remounting it; the FUSE mount below stays as it was."""
    return ("mount", "-n", "-o", "remount,bind,ro", "--", str(target))


def unmount(target: Path, *, lazy: bool = False) -> Argv:
    """``umount``; ``lazy`` detaches a stale FUSE mount whose client is gone (its stat hangs or fails)."""
    return ("umount", "-n", *(("-l",) if lazy else ()), "--", str(target))
