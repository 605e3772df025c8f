"""Mount options and the argv of every mount command (pure; golden-tested).

The PV's ``mountOptions`` reach the driver as ``mount_flags`` and end up on the command line of
``mount.glusterfs`` -- a shell script that splits its ``-o`` string on commas and unquoted
whitespace and expands globs. So nothing from a request becomes an option unless its name is on
the allow-list below and its value matches that option's own closed pattern; a value that starts
with ``-``, or holds anything but letters, digits, ``.`` and ``_``, is refused outright. The source
and target follow ``--``, so even they can never be read as options.

The vocabulary (and what is refused, and why) is ``provisioner.mount_options``, shared with the
request models.

The driver adds ``log-file`` (its own per-volume file, parsed when a mount fails) and a
``log-level`` unless the PV chose one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from provisioner import mount_options
from provisioner.csi.attributes import VolumeSource
from provisioner.csi.errors import InvalidArgument

Argv = tuple[str, ...]

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
    why = mount_options.problem(option)
    if why is not None:
        raise InvalidArgument(field, why)
    return option


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
