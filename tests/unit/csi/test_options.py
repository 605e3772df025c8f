"""Mount options: the allow-list, hostile values, and the golden argv of every mount command."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.csi import options
from provisioner.csi.attributes import VolumeSource
from provisioner.csi.errors import InvalidArgument

FIELD = "volume_capability.mount.mount_flags"
SOURCE = VolumeSource(volume="vol_a", servers=("10.77.0.11", "10.77.0.12", "10.77.0.13"))
LOG = Path("/var/lib/kubelet/plugins/glusterfs.gluster.org/volumes/0123456789abcdef0123456789abcdef.log")
STAGING = Path("/var/lib/kubelet/plugins/kubernetes.io/csi/glusterfs.gluster.org/abc/globalmount")


@pytest.mark.parametrize(
    ("flags", "vetted"),
    [
        ([], ()),
        (["ro"], ("ro",)),
        (["acl", "noatime"], ("acl", "noatime")),
        (["acl,log-level=DEBUG", "acl"], ("acl", "log-level=DEBUG")),
        (["direct-io-mode=disable", "attribute-timeout=0.5", "entry-timeout=10"], None),
        (["auto_unmount", "_netdev", "use-readdirp=no", "reader-thread-count=4"], None),
        (["fopen-keep-cache", "fopen-keep-cache=false"], None),
    ],
)
def test_allowed_options(flags: list[str], vetted: tuple[str, ...] | None) -> None:
    result = options.vet(flags)
    expected = vetted if vetted is not None else tuple(o for f in flags for o in f.split(","))
    assert result.options == expected


HOSTILE = [
    "log-file=/etc/passwd",
    "dump-fuse=/etc/shadow",
    "backup-volfile-servers=evil.example.org",
    "backupvolfile-server=evil",
    "volfile-id=other",
    "volume-name=other",
    "subdir-mount=/x",
    "server-port=1",
    "transport=rdma",
    "xlator-option=*replicate*.data-self-heal=off",
    "fuse-mountopts=dev,suid",
    "context=system_u:object_r:container_file_t:s0",
    "suid",
    "dev",
    "exec",
    "-oremount",
    "--bind",
    "-",
    "remount",
    "bind",
    "defaults",
    "attribute-timeout=-1",
    "attribute-timeout=1e9",
    "log-level=$(reboot)",
    "log-level=`id`",
    "log-level=INFO;id",
    "log-level=INFO id",
    "log-level=*",
    "direct-io-mode=enable disable",
    "direct-io-mode=-enable",
    "acl=1",
    "ro=1",
    "entry-timeout=",
    "=x",
    "",
    "a" * 50,
    "reader-thread-count=0",
    "log-level=info\nx",
    "nosuid\x00",
]


@pytest.mark.parametrize("flag", HOSTILE)
def test_hostile_options_are_refused_naming_the_field(flag: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        options.vet(["acl", flag])
    assert raised.value.field == FIELD


@pytest.mark.parametrize("flag", HOSTILE)
def test_a_hostile_value_never_reaches_the_argv(flag: str) -> None:
    """Whatever is refused cannot be part of an argv, and what is accepted never starts with '-'."""
    try:
        vetted = options.vet([flag])
    except InvalidArgument:
        return
    argv = options.fuse_mount(
        SOURCE, STAGING, options.client_options(SOURCE, vetted, read_only=False, log_file=LOG, log_level="INFO")
    )
    assert all(not part.startswith("-") or part in ("-n", "-t", "-o", "--") for part in argv)


def test_too_many_bytes_of_options() -> None:
    with pytest.raises(InvalidArgument, match="4096 bytes"):
        options.vet(["acl"] * 2000)


def test_ro_and_rw_together_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="both ro and rw"):
        options.vet(["ro", "rw"])


def test_refusal_says_why() -> None:
    with pytest.raises(InvalidArgument, match="names a file on the node"):
        options.vet(["log-file=/tmp/x"])
    with pytest.raises(InvalidArgument, match="from the PV's `servers` attribute"):
        options.vet(["backup-volfile-servers=h2:h3"])


def test_golden_fuse_mount_argv() -> None:
    vetted = options.vet(["acl", "log-level=WARNING"])
    argv = options.fuse_mount(
        SOURCE, STAGING, options.client_options(SOURCE, vetted, read_only=True, log_file=LOG, log_level="INFO")
    )
    assert argv == (
        "mount",
        "-n",
        "-t",
        "glusterfs",
        "-o",
        f"ro,acl,log-level=WARNING,log-file={LOG},backup-volfile-servers=10.77.0.12:10.77.0.13",
        "--",
        "10.77.0.11:/vol_a",
        str(STAGING),
    )


def test_driver_log_level_and_single_server() -> None:
    single = VolumeSource(volume="vol_a", servers=("gluster1",))
    argv = options.fuse_mount(
        single,
        STAGING,
        options.client_options(single, options.MountOptions(), read_only=False, log_file=LOG, log_level="INFO"),
    )
    assert argv[5] == f"log-level=INFO,log-file={LOG}"
    assert argv[-2:] == ("gluster1:/vol_a", str(STAGING))


def test_golden_bind_remount_and_unmount_argv() -> None:
    target = Path("/var/lib/kubelet/pods/p/volumes/kubernetes.io~csi/pvc-1/mount")
    assert options.bind_mount(STAGING, target) == ("mount", "-n", "--bind", "--", str(STAGING), str(target))
    assert options.remount_read_only(target) == ("mount", "-n", "-o", "remount,bind,ro", "--", str(target))
    assert options.unmount(target) == ("umount", "-n", "--", str(target))
    assert options.unmount(target, lazy=True) == ("umount", "-n", "-l", "--", str(target))
