"""The mount table, read from ``/proc/self/mountinfo`` (pure parser, no ``mount``/``findmnt`` call).

mountinfo is the kernel's own view of this process's mount namespace, which is the one the driver
mounts into (in the DaemonSet: the host's kubelet directory, shared with Bidirectional propagation).
Unlike ``/proc/mounts`` it carries the device number of each superblock, and that is what tells a
bind mount of a volume from another FUSE mount of the same volume: every bind of one glusterfs
client mount shares its ``major:minor``; a second client mount of the same volume gets a new one.

Line format (proc(5))::

    36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    (1)(2) (3)   (4)   (5)      (6)      (7)   (8) (9)    (10)         (11)

Paths are octal-escaped (``\\040`` space, ``\\011`` tab, ``\\012`` newline, ``\\134`` backslash).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

GLUSTER_FSTYPE = "fuse.glusterfs"
_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True, slots=True)
class MountEntry:
    mount_id: int
    parent_id: int
    device: str
    """``major:minor`` of the superblock: equal for a mount and all its bind mounts."""
    root: str
    """The directory of the filesystem mounted here: ``/`` for a whole mount, a subdirectory for a bind of one."""
    mount_point: str
    options: frozenset[str]
    """Per-mount options (``ro``/``rw``, ``nosuid``...), the ones a read-only bind mount changes."""
    fstype: str
    source: str
    super_options: frozenset[str]

    @property
    def read_only(self) -> bool:
        return "ro" in self.options

    @property
    def is_gluster(self) -> bool:
        return self.fstype == GLUSTER_FSTYPE

    @property
    def gluster_volume(self) -> str | None:
        """The volume name of a glusterfs mount (source ``server:/volume`` or ``server:volume``)."""
        if not self.is_gluster or ":" not in self.source:
            return None
        return self.source.split(":", 1)[1].lstrip("/").split("/", 1)[0] or None


class MountInfoError(ValueError):
    """A mountinfo line that does not have the documented shape."""


def unescape(field: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_line(line: str) -> MountEntry:
    fields = line.rstrip("\n").split(" ")
    try:
        separator = fields.index("-", 6)
    except ValueError:
        raise MountInfoError(f"no '-' separator in mountinfo line {line[:200]!r}") from None
    if separator < 6 or len(fields) < separator + 4:
        raise MountInfoError(f"too few fields in mountinfo line {line[:200]!r}")
    try:
        mount_id, parent_id = int(fields[0]), int(fields[1])
    except ValueError:
        raise MountInfoError(f"mount ids are not numbers in {line[:200]!r}") from None
    return MountEntry(
        mount_id=mount_id,
        parent_id=parent_id,
        device=fields[2],
        root=unescape(fields[3]),
        mount_point=unescape(fields[4]),
        options=frozenset(fields[5].split(",")),
        fstype=unescape(fields[separator + 1]),
        source=unescape(fields[separator + 2]),
        super_options=frozenset(fields[separator + 3].split(",")),
    )


def parse(text: str) -> tuple[MountEntry, ...]:
    return tuple(parse_line(line) for line in text.splitlines() if line.strip())


@dataclass(frozen=True, slots=True)
class MountTable:
    """A snapshot of the mount table with the lookups the node service needs."""

    entries: tuple[MountEntry, ...]

    @classmethod
    def from_text(cls, text: str) -> MountTable:
        return cls(parse(text))

    def at(self, path: Path | str) -> MountEntry | None:
        """The mount visible at ``path`` (the last one mounted there, if several are stacked)."""
        found = [e for e in self.entries if e.mount_point == str(path)]
        return found[-1] if found else None

    def same_superblock(self, entry: MountEntry) -> tuple[MountEntry, ...]:
        """Every mount of the filesystem ``entry`` shows (itself and its bind mounts)."""
        return tuple(e for e in self.entries if e.device == entry.device and e.fstype == entry.fstype)

    def under(self, roots: Sequence[Path]) -> tuple[MountEntry, ...]:
        return tuple(e for e in self.entries if any(Path(e.mount_point).is_relative_to(r) for r in roots))


def read(path: Path = Path("/proc/self/mountinfo")) -> MountTable:
    return MountTable.from_text(path.read_text())


def gluster_mounts(entries: Iterable[MountEntry]) -> tuple[MountEntry, ...]:
    return tuple(e for e in entries if e.is_gluster)
