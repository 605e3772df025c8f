"""The node's file system as the node service sees it: one small Protocol and the real implementation.

Everything the node service does to the node goes through ``Mounter``: read the mount table, look at
a path (is it there, a directory, or a FUSE mount whose client is gone?), run a mount command, make or
remove a directory, read file system usage. The unit tests put a fake behind it that interprets the
same argv against an in-memory mount table; the integration tests use ``SystemMounter`` on the real
node with real glusterfs mounts.

Commands run with ``asyncio.create_subprocess_exec`` (argv, no shell) and a timeout after which the
process is killed; a hung ``mount.glusterfs`` therefore cannot wedge a kubelet call forever.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from provisioner.csi import mountinfo
from provisioner.csi.errors import CommandError
from provisioner.csi.mountinfo import MountTable
from provisioner.csi.options import Argv

log = logging.getLogger(__name__)
MAX_OUTPUT = 64 * 1024


class PathState(enum.Enum):
    MISSING = "missing"
    DIRECTORY = "directory"
    STALE = "stale"
    """stat() failed with ENOTCONN: a FUSE mount whose client process is gone."""
    NOT_DIRECTORY = "not a directory"
    UNREADABLE = "unreadable"
    """stat() failed otherwise (EIO, EACCES...): something is mounted there but unusable."""


@dataclass(frozen=True, slots=True)
class CommandOutput:
    exit_status: int
    output: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_status == 0 and not self.timed_out


@dataclass(frozen=True, slots=True)
class Usage:
    """statvfs of a mounted volume, in bytes and inodes."""

    total_bytes: int
    available_bytes: int
    used_bytes: int
    total_inodes: int
    available_inodes: int
    used_inodes: int


class Mounter(Protocol):
    def table(self) -> MountTable:
        """The current mount table of the driver's mount namespace."""
        ...

    async def probe(self, path: Path) -> PathState:
        """What is at ``path``; a stat that does not answer within the probe timeout is UNREADABLE."""
        ...

    async def run(self, argv: Argv, *, timeout: float) -> CommandOutput:
        """Run a command; never raises for a non-zero exit (the caller decides what it means)."""
        ...

    def make_directory(self, path: Path) -> None:
        """mkdir (the parent must exist); raises OSError."""
        ...

    def remove_directory(self, path: Path) -> None:
        """rmdir (only an empty directory); raises OSError."""
        ...

    async def usage(self, path: Path) -> Usage:
        """statvfs; raises OSError (TimeoutError when the file system does not answer)."""
        ...

    def read_tail(self, path: Path, limit: int) -> str:
        """The last ``limit`` bytes of a text file, '' if it does not exist."""
        ...

    def remove_file(self, path: Path) -> None:
        """rm -f."""
        ...


def state_of(path: Path) -> PathState:
    try:
        st = path.stat()
    except FileNotFoundError:
        return PathState.MISSING
    except OSError as e:
        if e.errno == errno.ENOTCONN:
            return PathState.STALE
        log.warning("stat %s failed: %s", path, e)
        return PathState.UNREADABLE
    return PathState.DIRECTORY if stat.S_ISDIR(st.st_mode) else PathState.NOT_DIRECTORY


class SystemMounter:
    """The real node: /proc/self/mountinfo, stat(2), statvfs(2) and the mount/umount binaries."""

    def __init__(self, *, mountinfo_path: Path = Path("/proc/self/mountinfo"), stat_timeout: float = 10.0) -> None:
        self._mountinfo = mountinfo_path
        self._stat_timeout = stat_timeout

    def table(self) -> MountTable:
        return mountinfo.read(self._mountinfo)

    async def probe(self, path: Path) -> PathState:
        # In a thread: stat() of a FUSE mount whose client hangs (rather than died) blocks in the
        # kernel; the thread stays stuck, the event loop and every other kubelet call do not.
        try:
            async with asyncio.timeout(self._stat_timeout):
                return await asyncio.to_thread(state_of, path)
        except TimeoutError:
            log.warning("stat %s did not answer within %gs", path, self._stat_timeout)
            return PathState.UNREADABLE

    async def run(self, argv: Argv, *, timeout: float) -> CommandOutput:
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as e:
            raise CommandError(argv, f"cannot start {argv[0]}: {e.strerror or e}") from e
        try:
            async with asyncio.timeout(timeout):
                out, _ = await process.communicate()
        except TimeoutError:
            process.kill()
            out, _ = await process.communicate()
            return CommandOutput(exit_status=-9, output=_text(out), timed_out=True)
        return CommandOutput(exit_status=process.returncode or 0, output=_text(out))

    def make_directory(self, path: Path) -> None:
        path.mkdir(mode=0o750)

    def remove_directory(self, path: Path) -> None:
        path.rmdir()

    async def usage(self, path: Path) -> Usage:
        async with asyncio.timeout(self._stat_timeout):
            st = await asyncio.to_thread(os.statvfs, path)
        return Usage(
            total_bytes=st.f_blocks * st.f_frsize,
            available_bytes=st.f_bavail * st.f_frsize,
            used_bytes=max(0, st.f_blocks - st.f_bfree) * st.f_frsize,
            total_inodes=st.f_files,
            available_inodes=st.f_favail,
            used_inodes=max(0, st.f_files - st.f_ffree),
        )

    def read_tail(self, path: Path, limit: int) -> str:
        try:
            with path.open("rb") as f:
                f.seek(max(0, path.stat().st_size - limit))
                return _text(f.read(limit))
        except FileNotFoundError:
            return ""

    def remove_file(self, path: Path) -> None:
        path.unlink(missing_ok=True)


def _text(data: bytes | None) -> str:
    return (data or b"")[-MAX_OUTPUT:].decode("utf-8", errors="replace")
