"""A fake node for the CSI node service: an in-memory mount table driven by the same argv.

``FakeMounter.run`` interprets the argv the node service builds (``mount -t glusterfs``, ``--bind``,
``-o remount,bind,ro``, ``umount [-l]``) against its table, so a test asserts both the golden argv
and the resulting mounts. ``kill_client`` makes every mount of one FUSE superblock stale, as a dead
glusterfs client process does (stat answers ENOTCONN until the mount is lazily unmounted).
"""

from __future__ import annotations

import errno
import itertools
from dataclasses import dataclass, field, replace
from pathlib import Path

from provisioner.csi.mounter import CommandOutput, PathState, Usage
from provisioner.csi.mountinfo import GLUSTER_FSTYPE, MountEntry, MountTable
from provisioner.csi.options import Argv

KUBELET = Path("/var/lib/kubelet")
VOLUME_ID = "0123456789abcdef0123456789abcdef"
OTHER_ID = "fedcba9876543210fedcba9876543210"
STAGING = KUBELET / "plugins/kubernetes.io/csi/glusterfs.gluster.org/abc/globalmount"
TARGET = KUBELET / "pods/11111111-2222-3333-4444-555555555555/volumes/kubernetes.io~csi/pvc-1/mount"
TARGET2 = KUBELET / "pods/66666666-2222-3333-4444-555555555555/volumes/kubernetes.io~csi/pvc-1/mount"


@dataclass
class FakeMounter:
    entries: list[MountEntry] = field(default_factory=list)
    directories: set[Path] = field(default_factory=set)
    files: dict[Path, str] = field(default_factory=dict)
    dead: set[str] = field(default_factory=set)
    calls: list[Argv] = field(default_factory=list)
    fail_mount: tuple[int, str, str] | None = None
    """(exit status, output, client log) of the next FUSE mount; None = it succeeds."""
    mount_timeout: bool = False
    usage_value: Usage = field(default_factory=lambda: Usage(10 * 1024**3, 7 * 1024**3, 3 * 1024**3, 1000, 900, 100))
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(100))

    def __post_init__(self) -> None:
        for path in (STAGING, TARGET, TARGET2):
            self.add_directory_tree(path.parent)
        self.directories.add(STAGING)

    def add_directory_tree(self, path: Path) -> None:
        while path != Path("/"):
            self.directories.add(path)
            path = path.parent

    # -------------------------------------------------------------- the Mounter protocol

    def table(self) -> MountTable:
        return MountTable(tuple(self.entries))

    async def probe(self, path: Path) -> PathState:
        entry = self.table().at(path)
        if entry is not None and entry.device in self.dead:
            return PathState.STALE
        if entry is not None or path in self.directories:
            return PathState.DIRECTORY
        if path in self.files:
            return PathState.NOT_DIRECTORY
        return PathState.MISSING

    async def run(self, argv: Argv, *, timeout: float) -> CommandOutput:
        self.calls.append(argv)
        if argv[:4] == ("mount", "-n", "-t", "glusterfs"):
            return self._fuse(argv)
        if argv[:3] == ("mount", "-n", "--bind"):
            source, target = Path(argv[4]), Path(argv[5])
            below = self.table().at(source)
            if below is None:
                return CommandOutput(32, f"mount: {source}: not mounted")
            self._add(replace(below, mount_point=str(target), options=frozenset({"rw", "relatime"})))
            return CommandOutput(0, "")
        if argv[:4] == ("mount", "-n", "-o", "remount,bind,ro"):
            remounted = argv[5]
            for i, e in enumerate(self.entries):
                if e.mount_point == remounted:
                    self.entries[i] = replace(e, options=frozenset({"ro", "relatime"}))
            return CommandOutput(0, "")
        if argv[0] == "umount":
            unmounted = argv[-1]
            found = [i for i, e in enumerate(self.entries) if e.mount_point == unmounted]
            if not found:
                return CommandOutput(32, f"umount: {unmounted}: not mounted.")
            del self.entries[found[-1]]
            return CommandOutput(0, "")
        raise AssertionError(f"unexpected command {argv}")

    def _fuse(self, argv: Argv) -> CommandOutput:
        source, target = argv[7], argv[8]
        options = argv[5].split(",")
        log_file = next(o.split("=", 1)[1] for o in options if o.startswith("log-file="))
        if self.mount_timeout:
            return CommandOutput(-9, "", timed_out=True)
        if self.fail_mount is not None:
            status, output, log = self.fail_mount
            self.files[Path(log_file)] = log
            return CommandOutput(status, output)
        self.files[Path(log_file)] = "[...] I [fuse-bridge.c:5296:fuse_init] 0-glusterfs-fuse: FUSE inited\n"
        mode = "ro" if "ro" in options else "rw"
        self._add(
            MountEntry(
                mount_id=next(self._ids),
                parent_id=1,
                device=f"0:{next(self._ids)}",
                root="/",
                mount_point=target,
                options=frozenset({mode, "relatime"}),
                fstype=GLUSTER_FSTYPE,
                source=source,
                super_options=frozenset({mode, "user_id=0", "group_id=0", "default_permissions", "allow_other"}),
            )
        )
        return CommandOutput(0, "")

    def _add(self, entry: MountEntry) -> None:
        if Path(entry.mount_point) not in self.directories:
            raise AssertionError(f"mount on a missing directory {entry.mount_point}")
        self.entries.append(replace(entry, mount_id=next(self._ids)))

    def make_directory(self, path: Path) -> None:
        if path.parent not in self.directories:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))
        if path in self.directories:
            raise FileExistsError(errno.EEXIST, "File exists", str(path))
        self.directories.add(path)

    def remove_directory(self, path: Path) -> None:
        if self.table().at(path) is not None:
            raise OSError(errno.EBUSY, "Device or resource busy", str(path))
        if path not in self.directories:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))
        self.directories.discard(path)

    async def usage(self, path: Path) -> Usage:
        return self.usage_value

    def read_tail(self, path: Path, limit: int) -> str:
        return self.files.get(path, "")[-limit:]

    def remove_file(self, path: Path) -> None:
        self.files.pop(path, None)

    # -------------------------------------------------------------- test helpers

    def kill_client(self, mount_point: Path) -> None:
        """The glusterfs client of the mount at ``mount_point`` dies: all its binds go stale."""
        entry = self.table().at(mount_point)
        assert entry is not None
        self.dead.add(entry.device)

    def mounts_at(self, path: Path) -> list[MountEntry]:
        return [e for e in self.entries if e.mount_point == str(path)]
