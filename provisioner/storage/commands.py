"""Pure builders of the exact argv run on storage nodes.

Every node command the provisioner issues is built here as a tuple of strings, never as a shell
string. Values come from validated models (ids are hex, names match strict patterns), and the
transport passes argv through unchanged, so no event field can alter a command's shape. The one
shell use, editing fstab under a lock, runs a constant script and hands every value over as a
positional parameter. Golden tests pin these lists; change them only together with the tests.

Its length (over 300 lines) is one small builder per node command: having every argv the project
can run in one file is what makes it auditable.
"""

from __future__ import annotations

from collections.abc import Sequence

from provisioner.domain import Disperse, Distribute, Durability, Replicate
from provisioner.storage import tags

Argv = tuple[str, ...]

XFS_MOUNT_OPTIONS = "rw,inode64,noatime,nouuid"  # Heketi's brick mount options
LOOP_MOUNT_OPTIONS = f"loop,{XFS_MOUNT_OPTIONS}"
# In fstab, also ``nofail``: a node whose disk is gone still boots and serves its other bricks. The
# lost brick stays down (its ``brick/`` directory is on the missing filesystem, so glusterd cannot
# start it on the root filesystem instead) and reconcile reports it (``missing_device``). nofail
# also drops the mount's place before local-fs.target, so ``x-systemd.before=glusterd.service``
# puts it back where it matters: glusterd starts its bricks only once their mounts are done (or
# have failed). mount(8) ignores both; systemd reads them.
BOOT_OPTIONS = "nofail,x-systemd.before=glusterd.service"
FSTAB_XFS_OPTIONS = f"{XFS_MOUNT_OPTIONS},{BOOT_OPTIONS}"
FSTAB_LOOP_OPTIONS = f"{LOOP_MOUNT_OPTIONS},{BOOT_OPTIONS}"


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
    return ("mount", "-o", LOOP_MOUNT_OPTIONS, "--", image, mount_point)


def mount_xfs(device: str, mount_point: str) -> Argv:
    return ("mount", "-o", XFS_MOUNT_OPTIONS, "--", device, mount_point)


def umount(mount_point: str) -> Argv:
    return ("umount", "--", mount_point)


def set_group(path: str, gid: int) -> Argv:
    return ("chown", f":{gid}", "--", path)


def set_mode(path: str, mode: str) -> Argv:
    return ("chmod", mode, "--", path)


def tag_file(path: str, xattr: str, value: str) -> Argv:
    """Record one of our marks (``storage.tags``) on a brick image as a user xattr."""
    return ("setfattr", "-n", xattr, "-v", value, "--", path)


def remove_file(path: str) -> Argv:
    return ("rm", "-f", "--", path)


def sync_filesystem(path: str) -> Argv:
    """Commit the filesystem holding ``path`` to disk (``syncfs``), metadata and extended attributes too."""
    return ("sync", "--file-system", "--", path)


def remove_dir(path: str) -> Argv:
    return ("rmdir", "--", path)


# --- lvm brick backend (Heketi's flags, executors/cmdexec) ---------------------------------------
# LVM commands go through the ``lvm`` multiplexer as Heketi's do. Their positional values are VG/LV
# names built from hex ids and device paths from the validated topology (absolute paths).


def pv_volume_group(device: str) -> Argv:
    """Exit status 0 when ``device`` is a physical volume; stdout names its VG (blank for none)."""
    return ("lvm", "pvs", "--noheadings", "--options=vg_name", *_words([device]))


def signatures(device: str) -> Argv:
    """The filesystem, partition table and RAID/LVM signatures on ``device``, as JSON (listing only)."""
    return ("wipefs", "--json", *_words([device]))


def wipe_signatures(device: str) -> Argv:
    """Erase every signature ``signatures`` lists (a topology device with ``destroydata``)."""
    return ("wipefs", "--all", *_words([device]))


def pv_create(device: str) -> Argv:
    return ("lvm", "pvcreate", "-qq", "--metadatasize=128M", "--dataalignment=256K", *_words([device]))


def pv_resize(device: str) -> Argv:
    """Grow the PV to its disk's size now (``device resync`` after the disk grew)."""
    return ("lvm", "pvresize", "-qq", *_words([device]))


def vg_exists(vg: str) -> Argv:
    """Exit status 0 when the volume group exists."""
    return ("lvm", "vgs", "--noheadings", "--options=vg_name", vg)


def vg_create(vg: str, device: str, *, tags: Sequence[tuple[str, str]] = ()) -> Argv:
    return (
        "lvm",
        "vgcreate",
        "-qq",
        "--physicalextentsize=4M",
        "--autobackup=n",
        *lv_tags(tags),
        *_words([vg, device]),
    )


def lv_exists(vg: str, lv: str) -> Argv:
    """Exit status 0 when ``vg/lv`` exists (thin pool or thin LV)."""
    return ("lvm", "lvs", "--noheadings", "--options=lv_name", f"{vg}/{lv}")


def lv_tags(tags: Sequence[tuple[str, str]]) -> Argv:
    """``--addtag key=value`` pairs; LVM tags allow ``[A-Za-z0-9_+.-/=!:&#]``, so ``=`` is fine."""
    return tuple(word for key, value in tags for word in ("--addtag", f"{key}={value}"))


def thin_pool_create(vg: str, pool: str, *, pool_kib: int, metadata_kib: int) -> Argv:
    """A thin pool of ``pool_kib`` with Heketi's metadata size and chunk size."""
    return (
        "lvm",
        "lvcreate",
        "-qq",
        "--autobackup=n",
        "--type",
        "thin-pool",
        "--poolmetadatasize",
        f"{metadata_kib}K",
        "--chunksize",
        "256K",
        "--size",
        f"{pool_kib}K",
        "--name",
        pool,
        vg,
    )


def thin_lv_create(vg: str, pool: str, lv: str, *, virtual_kib: int, tags: Sequence[tuple[str, str]] = ()) -> Argv:
    """A thin LV in an existing pool, carrying our tags (``lvs`` shows them on this LV, not the pool)."""
    return (
        "lvm",
        "lvcreate",
        "-qq",
        "--autobackup=n",
        "--thin",
        f"{vg}/{pool}",
        "--virtualsize",
        f"{virtual_kib}K",
        "--name",
        lv,
        *lv_tags(tags),
    )


def thin_count(vg: str, pool: str) -> Argv:
    """How many thin LVs the pool still holds (stdout), exit status non-zero when the pool is gone."""
    return ("lvm", "lvs", "--noheadings", "--options=thin_count", f"{vg}/{pool}")


def lv_remove(vg: str, lv: str) -> Argv:
    return ("lvm", "lvremove", "--autobackup=n", "-f", f"{vg}/{lv}")


# --- fstab ----------------------------------------------------------------------------------------
# Both scripts are constants: sh receives the fstab path, the mount point and the line as $1..$3,
# so no value is ever parsed as shell. They hold ``<fstab>.lock`` (bricks of one node are built
# concurrently), match the mount point field by awk string comparison (``""`` forces string, not
# numeric, comparison; never a regex built from a value), and replace the file by an atomic rename
# of a sibling temporary file, so a crash leaves the old or the new fstab, never half of one.

_FSTAB_PRELUDE = r"""set -eu
fstab=$1 mount_point=$2
exec 9>>"$fstab.lock"
flock 9
others() {
  MOUNT_POINT=$mount_point awk 'BEGIN { mp = ENVIRON["MOUNT_POINT"] "" } /^[ \t]*#/ || $2 "" != mp' <"$fstab"
}
"""

# Adds the line unless it is there already, dropping any other line for the same mount point.
FSTAB_ADD_SCRIPT = (
    _FSTAB_PRELUDE
    + r"""line=$3
if [ -e "$fstab" ] && grep -qxF -e "$line" -- "$fstab"; then exit 0; fi
tmp=$(mktemp -- "$fstab.XXXXXX")
trap 'rm -f -- "$tmp"' EXIT
if [ -e "$fstab" ]; then
  others >"$tmp"
  chmod --reference="$fstab" -- "$tmp"
else
  chmod 644 -- "$tmp"
fi
printf '%s\n' "$line" >>"$tmp"
mv -f -- "$tmp" "$fstab"
"""
)

# Removes every uncommented line whose mount point field is ours; no file or no such line is fine.
FSTAB_REMOVE_SCRIPT = (
    _FSTAB_PRELUDE
    + r"""[ -e "$fstab" ] || exit 0
tmp=$(mktemp -- "$fstab.XXXXXX")
trap 'rm -f -- "$tmp"' EXIT
others >"$tmp"
if cmp -s -- "$tmp" "$fstab"; then exit 0; fi
chmod --reference="$fstab" -- "$tmp"
mv -f -- "$tmp" "$fstab"
"""
)

_FSTAB_ESCAPES = {" ": r"\040", "\t": r"\011", "\n": r"\012", "\\": r"\134"}


def fstab_field(value: str) -> str:
    """fstab(5) splits fields on blanks and reads octal escapes (``\\040`` is a space) in paths."""
    return "".join(_FSTAB_ESCAPES.get(char, char) for char in value)


def fstab_line(source: str, mount_point: str, options: str) -> str:
    """``<source> <mount point> xfs <options> 0 0``: no dump, no boot-time fsck (a no-op for XFS)."""
    return f"{fstab_field(source)} {fstab_field(mount_point)} xfs {options} 0 0"


def fstab_add(fstab: str, source: str, mount_point: str, options: str) -> Argv:
    """Ensure ``fstab`` mounts ``source`` at ``mount_point`` after a reboot (see FSTAB_ADD_SCRIPT)."""
    line = fstab_line(source, mount_point, options)
    return ("sh", "-c", FSTAB_ADD_SCRIPT, "sh", fstab, fstab_field(mount_point), line)


def fstab_remove(fstab: str, mount_point: str) -> Argv:
    return ("sh", "-c", FSTAB_REMOVE_SCRIPT, "sh", fstab, fstab_field(mount_point))


# --- inventory (what a node holds; read by reconcile) ------------------------------------------------


def list_brick_images(directory: str) -> Argv:
    """Every brick image of a file device with our xattrs, as ``getfattr -d`` dumps (no shell glob)."""
    return (
        "find", directory, "-maxdepth", "1", "-name", "brick_*.img",
        "-exec", "getfattr", "--absolute-names", "-d", "-m", tags.IMAGE_XATTR_PATTERN, "--", "{}", "+",
    )  # fmt: skip


def list_mounts() -> Argv:
    """Mount targets and sources, one per line, spaces escaped as ``\\x20`` (``findmnt -r``)."""
    return ("findmnt", "-rn", "-o", "TARGET,SOURCE")


def list_tagged_lvs() -> Argv:
    """Thin LVs with their tags, as JSON (LVM's ``--reportformat json``)."""
    return ("lvm", "lvs", "--reportformat", "json", "-o", "lv_name,vg_name,lv_tags")


def filesystem_space(directory: str) -> Argv:
    """Size and available bytes of the filesystem holding a file device (statfs, via ``df``)."""
    return ("df", "-B1", "--output=size,avail", "--", directory)


def vg_space(vg: str) -> Argv:
    """Size and free bytes of an lvm device's VG, as JSON."""
    return ("lvm", "vgs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", "vg_name,vg_size,vg_free", vg)


# --- gluster CLI ----------------------------------------------------------------------------------


def gluster(*args: str, timeout: int) -> Argv:
    """Always script mode (otherwise destructive commands prompt and do nothing, exiting 0) and XML.

    The gluster CLI takes a ``--word`` *anywhere* in its argv as one of its own options
    (``--log-file=`` appends to any file as root, ``--remote-host=`` sends the call elsewhere), so no
    word after these may start with ``-``: a value that does is a bug upstream and is refused here."""
    return ("gluster", "--mode=script", "--xml", f"--timeout={timeout}", *_words(args))


def _words(values: Sequence[str]) -> tuple[str, ...]:
    """``values`` as positional words; ValueError for any that a command would read as an option."""
    for value in values:
        if value.startswith("-") or not value:
            raise ValueError(f"{value[:60]!r} cannot be a positional word of a node command")
    return tuple(values)


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


def volume_heal_info(name: str, *, timeout: int) -> Argv:
    """Entries each brick of a replicated or dispersed volume still has to heal."""
    return gluster("volume", "heal", name, "info", timeout=timeout)


def volume_rebalance_start(name: str, *, timeout: int) -> Argv:
    return gluster("volume", "rebalance", name, "start", timeout=timeout)


# --- gluster snapshots, and clones made from their LVs ------------------------------------------------


def snapshot_create(name: str, volume: str, description: str, *, timeout: int) -> Argv:
    """A crash-consistent snapshot of every brick (gluster barriers I/O while the thin LVs are taken).
    ``no-timestamp`` keeps our name as it is; the description carries our id (self-describing)."""
    return gluster("snapshot", "create", name, volume, "no-timestamp", "description", description, timeout=timeout)


def snapshot_delete(name: str, *, timeout: int) -> Argv:
    return gluster("snapshot", "delete", name, timeout=timeout)


def snapshot_info(name: str, *, timeout: int) -> Argv:
    return gluster("snapshot", "info", name, timeout=timeout)


def snapshot_lv(vg: str, origin: str, snapshot_volume: str) -> Argv:
    """The LV that gluster snapshot volume ``snapshot_volume`` took of brick LV ``origin`` (its name
    is ``<snapshot volume>_<n>``); both values are hex names, so the selection cannot be altered."""
    select = f"origin={origin} && lv_name=~^{snapshot_volume}_"
    return ("lvm", "lvs", "--noheadings", "--options=lv_name", "--select", select, vg)


def thin_snapshot_create(vg: str, source: str, lv: str, *, tags: Sequence[tuple[str, str]] = ()) -> Argv:
    """A thin snapshot of ``source`` in the same pool, activated like any brick LV (``-kn``: no
    activation skip), as a clone's brick."""
    return (
        "lvm",
        "lvcreate",
        "-qq",
        "--autobackup=n",
        "--snapshot",
        "-kn",
        "--name",
        lv,
        *lv_tags(tags),
        f"{vg}/{source}",
    )


def remove_xattr(path: str, name: str) -> Argv:
    """Drop one extended attribute (``setfattr -x``); exits 1 when it is not there."""
    return ("setfattr", "-x", name, "--", path)


def volume_replace_brick(name: str, old: str, new: str, *, timeout: int) -> Argv:
    """Swap brick ``old`` for ``new`` (both ``host:/path``) in place; self-heal then fills ``new``.
    ``commit force`` is the only form gluster still supports; it does not wait for the heal."""
    return gluster("volume", "replace-brick", name, old, new, "commit", "force", timeout=timeout)


def peer_probe(host: str, *, timeout: int) -> Argv:
    return gluster("peer", "probe", host, timeout=timeout)


def peer_detach(host: str, *, timeout: int) -> Argv:
    return gluster("peer", "detach", host, timeout=timeout)
