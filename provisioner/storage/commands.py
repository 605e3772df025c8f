"""Pure builders of the exact argv run on storage nodes.

Every node command the provisioner issues is built here as a tuple of strings, never as a shell
string. Values come from validated models (ids are hex, names match strict patterns), and the
transport passes argv through unchanged, so no event field can alter a command's shape. Golden
tests pin these lists; change them only together with the tests.
"""

from __future__ import annotations

from collections.abc import Sequence

from provisioner.domain import Disperse, Distribute, Durability, Replicate

Argv = tuple[str, ...]

XFS_MOUNT_OPTIONS = "rw,inode64,noatime,nouuid"


# --- file brick backend -------------------------------------------------------------------------


def mkdir(path: str) -> Argv:
    return ("mkdir", "-p", "--", path)


def is_mounted(mount_point: str) -> Argv:
    """Exit status 0 when something is mounted there (``mountpoint`` from util-linux)."""
    return ("mountpoint", "-q", "--", mount_point)


def create_image(image: str, size: int) -> Argv:
    """A sparse file: it occupies no space until written."""
    return ("truncate", "-s", str(size), "--", image)


def make_xfs(device: str, *, arbiter: bool = False) -> Argv:
    """Heketi's XFS: 512-byte inodes for gluster's xattrs, 8 KiB directory blocks.

    ``-f`` because a retried step may find a half-written filesystem from a crashed try; the target
    is always an image or LV named after our own brick id, never a user's device.
    """
    inode = ("-i", "size=512,maxpct=100") if arbiter else ("-i", "size=512")
    return ("mkfs.xfs", "-f", "-q", *inode, "-n", "size=8192", "--", device)


def mount_loop(image: str, mount_point: str) -> Argv:
    return ("mount", "-o", f"loop,{XFS_MOUNT_OPTIONS}", "--", image, mount_point)


def umount(mount_point: str) -> Argv:
    return ("umount", "--", mount_point)


def set_group(path: str, gid: int) -> Argv:
    return ("chown", f":{gid}", "--", path)


def set_mode(path: str, mode: str) -> Argv:
    return ("chmod", mode, "--", path)


def tag_file(path: str, name: str, value: str) -> Argv:
    """Record our ids on a brick image as a user xattr, so a node describes itself."""
    return ("setfattr", "-n", f"user.provisioner.{name}", "-v", value, "--", path)


def remove_file(path: str) -> Argv:
    return ("rm", "-f", "--", path)


def remove_dir(path: str) -> Argv:
    return ("rmdir", "--", path)


# --- gluster CLI ----------------------------------------------------------------------------------


def gluster(*args: str, timeout: int) -> Argv:
    """Always script mode (otherwise destructive commands prompt and do nothing, exiting 0) and XML."""
    return ("gluster", "--mode=script", "--xml", f"--timeout={timeout}", *args)


def durability_args(durability: Durability) -> Argv:
    match durability:
        case Distribute():
            return ()
        case Replicate(replica=replica, arbiter=arbiter):
            return ("replica", str(replica), *(("arbiter", "1") if arbiter else ()))
        case Disperse(data=data, redundancy=redundancy):
            return ("disperse-data", str(data), "redundancy", str(redundancy))


def volume_create(name: str, durability: Durability, bricks: Sequence[str], *, timeout: int) -> Argv:
    """``bricks`` are ``host:/path`` in set order: each consecutive ``set_size`` bricks form a set."""
    return gluster("volume", "create", name, *durability_args(durability), *bricks, timeout=timeout)


def volume_set(name: str, key: str, value: str, *, timeout: int) -> Argv:
    return gluster("volume", "set", name, key, value, timeout=timeout)


def volume_start(name: str, *, timeout: int, force: bool = False) -> Argv:
    return gluster("volume", "start", name, *(("force",) if force else ()), timeout=timeout)


def volume_stop(name: str, *, timeout: int, force: bool = False) -> Argv:
    return gluster("volume", "stop", name, *(("force",) if force else ()), timeout=timeout)


def volume_delete(name: str, *, timeout: int) -> Argv:
    return gluster("volume", "delete", name, timeout=timeout)


def volume_info(name: str | None = None, *, timeout: int) -> Argv:
    return gluster("volume", "info", *((name,) if name else ()), timeout=timeout)


def brick_argument(host: str, path: str) -> str:
    return f"{host}:{path}"


def volume_add_brick(name: str, bricks: Sequence[str], *, timeout: int) -> Argv:
    """Whole sets only: gluster infers the layout from the volume's existing replica/disperse count."""
    return gluster("volume", "add-brick", name, *bricks, timeout=timeout)


def volume_rebalance_start(name: str, *, timeout: int) -> Argv:
    return gluster("volume", "rebalance", name, "start", timeout=timeout)


def peer_probe(host: str, *, timeout: int) -> Argv:
    return gluster("peer", "probe", host, timeout=timeout)


def peer_detach(host: str, *, timeout: int) -> Argv:
    return gluster("peer", "detach", host, timeout=timeout)
