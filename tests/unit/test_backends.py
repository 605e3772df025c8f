"""Brick backends against a recording executor: the exact argv sequence of each lifecycle step.

They follow Heketi's ``executors/cmdexec`` order. Both backends also run for real: the file
backend on the namespace nodes, the lvm backend on the QEMU storage guests (e2e).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from provisioner.domain import (
    Brick,
    BrickBackend,
    BrickId,
    Cluster,
    ClusterId,
    Device,
    DeviceId,
    Node,
    NodeId,
    Replicate,
    Volume,
    VolumeId,
)
from provisioner.errors import DeviceFull, DeviceNotEmpty
from provisioner.executor import Argv, CommandResult
from provisioner.settings import StorageSettings
from provisioner.storage import commands
from provisioner.storage.backends import BrickSpec, DeviceSpec, FileBackend, LvmBackend, ThinPoolSize, thin_pool_size
from provisioner.storage.operations import VolumeOperations
from provisioner.storage.parsing import UnparsableOutput

GiB = 1024**3
HOST = "10.0.0.1"
FSTAB = "/var/lib/provisioner/fstab"
DEVICE_ID = DeviceId("d" * 32)
BRICK_ID = BrickId("b" * 32)
VOLUME_ID = VolumeId("a" * 32)
VG = f"vg_{DEVICE_ID}"
MOUNT = f"/var/lib/provisioner/mounts/{VG}/brick_{BRICK_ID}"
BRICK_DIR = f"{MOUNT}/brick"
IMAGE = f"/srv/devices/dev1/brick_{BRICK_ID}.img"
LV = f"{VG}/brick_{BRICK_ID}"
POOL = f"{VG}/tp_{BRICK_ID}"
DEVNODE = f"/dev/mapper/{VG}-brick_{BRICK_ID}"


class Recorder:
    """Answers every command with exit 0 (empty output) unless told otherwise; records the calls."""

    def __init__(
        self,
        *,
        failing: tuple[Argv, ...] = (),
        stdout: dict[Argv, str] | None = None,
        stderr: Callable[[Argv], str] = lambda argv: "",
    ) -> None:
        self.failing = set(failing)
        self.stdout = stdout or {}
        self.stderr = stderr
        self.calls: list[tuple[str, Argv]] = []

    async def run(self, host: str, argv: Argv, *, timeout: float, check: bool = True) -> CommandResult:
        self.calls.append((host, argv))
        failed = argv in self.failing or bool(self.stderr(argv))
        result = CommandResult(host, argv, 5 if failed else 0, self.stdout.get(argv, ""), self.stderr(argv))
        return result.check() if check else result

    async def close(self) -> None:
        return None

    @property
    def argvs(self) -> list[Argv]:
        assert {host for host, _ in self.calls} <= {HOST}
        return [argv for _, argv in self.calls]


def spec(
    backend: BrickBackend,
    *,
    device_name: str | None = None,
    brick_root: str = "/var/lib/provisioner/mounts",
    gid: int | None = 2001,
    snapshot_factor: float = 1.0,
) -> BrickSpec:
    name = device_name or ("/srv/devices/dev1" if backend is BrickBackend.FILE else "/dev/vdb")
    device = Device(id=DEVICE_ID, name=name, capacity=100 * GiB, backend=backend)
    node = Node(id=NodeId("c" * 32), manage=HOST, storage="192.168.0.1", devices=(device,))
    brick = Brick(id=BRICK_ID, node=node.id, device=DEVICE_ID, size=GiB, set_index=0)
    return BrickSpec(
        node=node,
        device=device,
        brick=brick,
        volume=VOLUME_ID,
        brick_root=brick_root,
        gid=gid,
        snapshot_factor=snapshot_factor,
    )


FILE_LINE = f"{IMAGE} {MOUNT} xfs loop,rw,inode64,noatime,nouuid,nofail,x-systemd.before=glusterd.service 0 0"
LVM_LINE = f"{DEVNODE} {MOUNT} xfs rw,inode64,noatime,nouuid,nofail,x-systemd.before=glusterd.service 0 0"
FSTAB_REMOVE = ("sh", "-c", commands.FSTAB_REMOVE_SCRIPT, "sh", FSTAB, MOUNT)
BRICK_DIR_STEPS = [
    ("mkdir", "-p", "--", BRICK_DIR),
    ("chown", ":2001", "--", BRICK_DIR),
    ("chmod", "2775", "--", BRICK_DIR),
]


def fstab_add(line: str) -> Argv:
    return ("sh", "-c", commands.FSTAB_ADD_SCRIPT, "sh", FSTAB, MOUNT, line)


# --- file ---------------------------------------------------------------------------------------------


async def test_file_create_fresh() -> None:
    nodes = Recorder(failing=(("mountpoint", "-q", "--", MOUNT),))
    await FileBackend(nodes, timeout=5, fstab=FSTAB).create(spec(BrickBackend.FILE))
    assert nodes.argvs == [
        ("mountpoint", "-q", "--", MOUNT),
        ("mkdir", "-p", "--", MOUNT),
        ("truncate", "-s", str(GiB), "--", IMAGE),
        ("setfattr", "-n", "user.provisioner.volume", "-v", VOLUME_ID, "--", IMAGE),
        ("mkfs.xfs", "-f", "-q", "-i", "size=512", "-n", "size=8192", "--", IMAGE),
        fstab_add(FILE_LINE),
        ("mount", "-o", "loop,rw,inode64,noatime,nouuid", "--", IMAGE, MOUNT),
        *BRICK_DIR_STEPS,
    ]


async def test_file_create_when_already_mounted_only_ensures_fstab_and_brick_dir() -> None:
    nodes = Recorder()
    await FileBackend(nodes, timeout=5, fstab=FSTAB).create(spec(BrickBackend.FILE))
    assert nodes.argvs == [("mountpoint", "-q", "--", MOUNT), fstab_add(FILE_LINE), *BRICK_DIR_STEPS]


async def test_file_create_without_gid_leaves_ownership_alone() -> None:
    nodes = Recorder()
    await FileBackend(nodes, timeout=5, fstab=FSTAB).create(spec(BrickBackend.FILE, gid=None))
    assert nodes.argvs[-1] == ("mkdir", "-p", "--", BRICK_DIR)


async def test_file_destroy() -> None:
    nodes = Recorder()
    await FileBackend(nodes, timeout=5, fstab=FSTAB).destroy(spec(BrickBackend.FILE))
    assert nodes.argvs == [
        ("mountpoint", "-q", "--", MOUNT),
        ("umount", "--", MOUNT),
        FSTAB_REMOVE,
        ("rm", "-f", "--", IMAGE),
        ("rmdir", "--", MOUNT),
    ]


async def test_file_destroy_when_already_gone() -> None:
    nodes = Recorder(failing=(("mountpoint", "-q", "--", MOUNT), ("rmdir", "--", MOUNT)))
    await FileBackend(nodes, timeout=5, fstab=FSTAB).destroy(spec(BrickBackend.FILE))
    assert nodes.argvs == [
        ("mountpoint", "-q", "--", MOUNT),
        FSTAB_REMOVE,
        ("rm", "-f", "--", IMAGE),
        ("rmdir", "--", MOUNT),
    ]


async def test_file_prepare_makes_the_image_directory() -> None:
    nodes = Recorder()
    s = spec(BrickBackend.FILE)
    backend = FileBackend(nodes, timeout=5, fstab=FSTAB)
    await backend.prepare(DeviceSpec(node=s.node, device=s.device, cluster="c1"))
    assert await backend.measure(DeviceSpec(node=s.node, device=s.device, cluster="c1")) is None
    assert nodes.argvs == [("mkdir", "-p", "--", "/srv/devices/dev1")]


# --- lvm ----------------------------------------------------------------------------------------------

MOUNTED = ("mountpoint", "-q", "--", MOUNT)
LV_EXISTS = ("lvm", "lvs", "--noheadings", "--options=lv_name", LV)
POOL_EXISTS = ("lvm", "lvs", "--noheadings", "--options=lv_name", POOL)
THIN_COUNT = ("lvm", "lvs", "--noheadings", "--options=thin_count", POOL)
TAGS = ("--addtag", f"provisioner.volume={VOLUME_ID}", "--addtag", f"provisioner.brick={BRICK_ID}")


async def test_lvm_create_fresh() -> None:
    nodes = Recorder(failing=(MOUNTED, LV_EXISTS, POOL_EXISTS))
    await LvmBackend(nodes, timeout=5, fstab=FSTAB).create(spec(BrickBackend.LVM))
    assert nodes.argvs == [
        MOUNTED,
        ("mkdir", "-p", "--", MOUNT),
        LV_EXISTS,
        POOL_EXISTS,
        (
            "lvm",
            "lvcreate",
            "-qq",
            "--autobackup=n",
            "--type",
            "thin-pool",
            "--poolmetadatasize",
            "8192K",
            "--chunksize",
            "256K",
            "--size",
            "1048576K",
            "--name",
            f"tp_{BRICK_ID}",
            VG,
        ),
        (
            "lvm",
            "lvcreate",
            "-qq",
            "--autobackup=n",
            "--thin",
            POOL,
            "--virtualsize",
            "1048576K",
            "--name",
            f"brick_{BRICK_ID}",
            *TAGS,
        ),
        ("mkfs.xfs", "-f", "-q", "-i", "size=512", "-n", "size=8192", "--", DEVNODE),
        fstab_add(LVM_LINE),
        ("mount", "-o", "rw,inode64,noatime,nouuid", "--", DEVNODE, MOUNT),
        *BRICK_DIR_STEPS,
    ]


async def test_lvm_create_on_a_volume_group_filled_behind_our_back_names_the_device() -> None:
    def full(argv: Argv) -> str:
        return (
            '  Volume group "vg_d" has insufficient free space (3 extents): 258 required.\n' if "--size" in argv else ""
        )

    nodes = Recorder(failing=(MOUNTED, LV_EXISTS, POOL_EXISTS), stderr=full)
    with pytest.raises(DeviceFull) as raised:
        await LvmBackend(nodes, timeout=5, fstab=FSTAB).create(spec(BrickBackend.LVM))
    assert str(raised.value) == (
        f"node {HOST} device /dev/vdb: no room for a brick of {GiB} bytes (1082130432 bytes of thin pool and "
        'metadata): Volume group "vg_d" has insufficient free space (3 extents): 258 required.'
    )
    assert raised.value.reason == "DeviceFull"


async def test_lvm_create_when_already_mounted_only_ensures_fstab_and_brick_dir() -> None:
    nodes = Recorder()
    await LvmBackend(nodes, timeout=5, fstab=FSTAB).create(spec(BrickBackend.LVM))
    assert nodes.argvs == [MOUNTED, fstab_add(LVM_LINE), *BRICK_DIR_STEPS]


async def test_lvm_create_resumes_with_an_existing_lv() -> None:
    nodes = Recorder(failing=(MOUNTED,))
    await LvmBackend(nodes, timeout=5, fstab=FSTAB).create(spec(BrickBackend.LVM))
    assert nodes.argvs == [
        MOUNTED,
        ("mkdir", "-p", "--", MOUNT),
        LV_EXISTS,
        ("mkfs.xfs", "-f", "-q", "-i", "size=512", "-n", "size=8192", "--", DEVNODE),
        fstab_add(LVM_LINE),
        ("mount", "-o", "rw,inode64,noatime,nouuid", "--", DEVNODE, MOUNT),
        *BRICK_DIR_STEPS,
    ]


async def test_lvm_create_resumes_with_a_pool_left_without_its_lv() -> None:
    nodes = Recorder(failing=(MOUNTED, LV_EXISTS))
    await LvmBackend(nodes, timeout=5, fstab=FSTAB).create(spec(BrickBackend.LVM, gid=None))
    assert nodes.argvs[2:5] == [
        LV_EXISTS,
        POOL_EXISTS,
        (
            "lvm",
            "lvcreate",
            "-qq",
            "--autobackup=n",
            "--thin",
            POOL,
            "--virtualsize",
            "1048576K",
            "--name",
            f"brick_{BRICK_ID}",
            *TAGS,
        ),
    ]


async def test_lvm_destroy() -> None:
    nodes = Recorder(stdout={THIN_COUNT: "  0\n"})
    await LvmBackend(nodes, timeout=5, fstab=FSTAB).destroy(spec(BrickBackend.LVM))
    assert nodes.argvs == [
        MOUNTED,
        ("umount", "--", MOUNT),
        FSTAB_REMOVE,
        LV_EXISTS,
        ("lvm", "lvremove", "--autobackup=n", "-f", LV),
        THIN_COUNT,
        ("lvm", "lvremove", "--autobackup=n", "-f", POOL),
        ("rmdir", "--", MOUNT),
    ]


async def test_lvm_destroy_when_already_gone() -> None:
    nodes = Recorder(failing=(MOUNTED, LV_EXISTS, THIN_COUNT, ("rmdir", "--", MOUNT)))
    await LvmBackend(nodes, timeout=5, fstab=FSTAB).destroy(spec(BrickBackend.LVM))
    assert nodes.argvs == [MOUNTED, FSTAB_REMOVE, LV_EXISTS, THIN_COUNT, ("rmdir", "--", MOUNT)]


async def test_lvm_destroy_keeps_a_pool_that_still_holds_thin_lvs() -> None:
    nodes = Recorder(failing=(MOUNTED,), stdout={THIN_COUNT: "  1\n"})
    await LvmBackend(nodes, timeout=5, fstab=FSTAB).destroy(spec(BrickBackend.LVM))
    assert ("lvm", "lvremove", "--autobackup=n", "-f", POOL) not in nodes.argvs
    assert ("lvm", "lvremove", "--autobackup=n", "-f", LV) in nodes.argvs


VG_EXISTS = ("lvm", "vgs", "--noheadings", "--options=vg_name", VG)
PV_VG = ("lvm", "pvs", "--noheadings", "--options=vg_name", "/dev/vdb")
SIGNATURES = ("wipefs", "--json", "/dev/vdb")
WIPE = ("wipefs", "--all", "/dev/vdb")
PV_CREATE = ("lvm", "pvcreate", "-qq", "--metadatasize=128M", "--dataalignment=256K", "/dev/vdb")
VG_TAGS = ("--addtag", f"provisioner.device={DEVICE_ID}", "--addtag", "provisioner.cluster=c1")
VG_CREATE = ("lvm", "vgcreate", "-qq", "--physicalextentsize=4M", "--autobackup=n", *VG_TAGS, VG, "/dev/vdb")
XFS_FOUND = '{"signatures": [{"device": "vdb", "offset": "0x0", "type": "xfs", "uuid": "2a28", "label": null}]}'
NOTHING_FOUND = '{\n   "signatures": [\n\n   ]\n}\n'


def device_spec(*, destroy_data: bool = False) -> DeviceSpec:
    s = spec(BrickBackend.LVM)
    return DeviceSpec(node=s.node, device=s.device, cluster="c1", destroy_data=destroy_data)


async def prepare(nodes: Recorder, *, destroy_data: bool = False) -> None:
    await LvmBackend(nodes, timeout=5, fstab=FSTAB).prepare(device_spec(destroy_data=destroy_data))


async def test_lvm_prepare_fresh_device() -> None:
    nodes = Recorder(failing=(VG_EXISTS, PV_VG), stdout={SIGNATURES: NOTHING_FOUND})
    await prepare(nodes)
    assert nodes.argvs == [VG_EXISTS, PV_VG, SIGNATURES, PV_CREATE, VG_CREATE]


async def test_lvm_prepare_device_already_present_even_with_destroydata() -> None:
    nodes = Recorder()
    await prepare(nodes, destroy_data=True)
    assert nodes.argvs == [VG_EXISTS]


async def test_lvm_prepare_resumes_after_pvcreate() -> None:
    """A PV in no VG holds no data: a crash between pvcreate and vgcreate left it."""
    nodes = Recorder(failing=(VG_EXISTS,), stdout={PV_VG: "  \n"})
    await prepare(nodes)
    assert nodes.argvs == [VG_EXISTS, PV_VG, VG_CREATE]


@pytest.mark.parametrize("destroy_data", [False, True])
async def test_lvm_prepare_refuses_a_pv_of_another_volume_group(destroy_data: bool) -> None:
    nodes = Recorder(failing=(VG_EXISTS,), stdout={PV_VG: "  vg_home\n"})
    with pytest.raises(DeviceNotEmpty) as refused:
        await prepare(nodes, destroy_data=destroy_data)
    assert str(refused.value).startswith(
        f"node {HOST} device /dev/vdb: is a physical volume of LVM volume group vg_home;"
    )
    assert nodes.argvs == [VG_EXISTS, PV_VG]


async def test_lvm_prepare_refuses_a_device_with_a_filesystem() -> None:
    nodes = Recorder(failing=(VG_EXISTS, PV_VG), stdout={SIGNATURES: XFS_FOUND})
    with pytest.raises(DeviceNotEmpty) as refused:
        await prepare(nodes)
    assert str(refused.value) == (
        f"node {HOST} device /dev/vdb: holds xfs at 0x0; set destroydata to wipe it, or name another device"
    )
    assert nodes.argvs == [VG_EXISTS, PV_VG, SIGNATURES]


async def test_lvm_prepare_with_destroydata_wipes_first() -> None:
    nodes = Recorder(failing=(VG_EXISTS, PV_VG), stdout={SIGNATURES: XFS_FOUND})
    await prepare(nodes, destroy_data=True)
    assert nodes.argvs == [VG_EXISTS, PV_VG, SIGNATURES, WIPE, PV_CREATE, VG_CREATE]


async def test_lvm_prepare_stops_on_output_it_cannot_read() -> None:
    nodes = Recorder(failing=(VG_EXISTS, PV_VG), stdout={SIGNATURES: "wipefs: something else"})
    with pytest.raises(UnparsableOutput):
        await prepare(nodes, destroy_data=True)
    assert WIPE not in nodes.argvs


async def test_lvm_measure_reads_the_volume_group_size() -> None:
    report = json.dumps({"report": [{"vg": [{"vg_name": VG, "vg_size": "4290772992", "vg_free": "4290772992"}]}]})
    nodes = Recorder(stdout={commands.vg_space(VG): report})
    assert await LvmBackend(nodes, timeout=5, fstab=FSTAB).measure(device_spec()) == 4290772992
    assert nodes.argvs == [commands.vg_space(VG)]


async def test_lvm_resync_grows_the_physical_volume() -> None:
    nodes = Recorder()
    await LvmBackend(nodes, timeout=5, fstab=FSTAB).resync(device_spec())
    assert nodes.argvs == [("lvm", "pvresize", "-qq", "/dev/vdb")]


@pytest.mark.parametrize(
    ("size", "factor", "expected"),
    [
        (GiB, 1.0, ThinPoolSize(pool=1048576, metadata=8192, virtual=1048576)),  # heketi#1827's log
        (GiB, 1.5, ThinPoolSize(pool=1572864, metadata=8192, virtual=1048576)),
        (GiB + 1, 1.0, ThinPoolSize(pool=1052672, metadata=8192, virtual=1048577)),  # pool up to an extent
        (100 * GiB, 2.0, ThinPoolSize(pool=209715200, metadata=1048576, virtual=104857600)),
        (4 * 1024 * GiB, 100.0, ThinPoolSize(pool=429496729600, metadata=16777216, virtual=4294967296)),  # capped
    ],
)
def test_thin_pool_size_follows_heketi(size: int, factor: float, expected: ThinPoolSize) -> None:
    assert thin_pool_size(size, factor) == expected


# --- through VolumeOperations ----------------------------------------------------------------------------


async def test_operations_pass_fstab_setting_and_snapshot_factor_to_the_lvm_backend() -> None:
    s = spec(BrickBackend.LVM)
    cluster = Cluster(id=ClusterId("dev"), nodes=(s.node,))
    volume = Volume(
        id=VOLUME_ID,
        name="vol_x",
        cluster=cluster.id,
        size=GiB,
        durability=Replicate(replica=1),
        bricks=(s.brick,),
        snapshot_factor=2.0,
    )
    report = json.dumps({"report": [{"vg": [{"vg_name": VG, "vg_size": "4290772992", "vg_free": "1"}]}]})
    nodes = Recorder(
        failing=(MOUNTED, LV_EXISTS, POOL_EXISTS, VG_EXISTS, PV_VG),
        stdout={SIGNATURES: NOTHING_FOUND, commands.vg_space(VG): report},
    )
    operations = VolumeOperations(nodes, StorageSettings(fstab="/etc/other-fstab"), owner="t.state")
    assert await operations.prepare_device(operations.device_spec("c1", s.node, s.device)) == 4290772992
    assert (*VG_CREATE[:5], *VG_TAGS, "--addtag", "provisioner.owner=t.state", VG, "/dev/vdb") in nodes.argvs
    await operations.create_bricks(cluster, volume)
    [pool, lv] = [argv for argv in nodes.argvs if argv[:2] == ("lvm", "lvcreate")]
    assert pool[pool.index("--size") + 1] == "2097152K"
    assert lv[lv.index("--virtualsize") + 1] == "1048576K"
    [fstab] = [argv for argv in nodes.argvs if argv[0] == "sh"]
    assert fstab[4] == "/etc/other-fstab"
    assert nodes.argvs[:1] == [VG_EXISTS]


# --- hostile-looking values ------------------------------------------------------------------------------

HOSTILE = "$(touch /pwned) x;y"


@pytest.mark.parametrize("backend", [BrickBackend.FILE, BrickBackend.LVM])
async def test_hostile_looking_paths_are_always_whole_argv_words(backend: BrickBackend) -> None:
    """Paths never come from events unvalidated, but even so they cannot change a command's shape."""
    s = spec(backend, device_name=f"/srv/{HOSTILE}", brick_root=f"/mnt/{HOSTILE}")
    mount = s.mount_point
    source = f"/srv/{HOSTILE}/brick_{BRICK_ID}.img" if backend is BrickBackend.FILE else DEVNODE
    options = commands.LOOP_MOUNT_OPTIONS if backend is BrickBackend.FILE else commands.XFS_MOUNT_OPTIONS
    escaped_mount = mount.replace(" ", r"\040")
    whole_words = {
        f"/srv/{HOSTILE}",
        mount,
        s.path,
        source,
        escaped_mount,
        f"{source.replace(' ', chr(92) + '040')} {escaped_mount} xfs {options},{commands.BOOT_OPTIONS} 0 0",
    }
    absent = (commands.is_mounted(mount), LV_EXISTS, POOL_EXISTS, VG_EXISTS, commands.pv_volume_group(s.device.name))
    nodes = Recorder(failing=absent, stdout={commands.signatures(s.device.name): NOTHING_FOUND})
    backend_impl = (FileBackend if backend is BrickBackend.FILE else LvmBackend)(nodes, timeout=5, fstab=FSTAB)
    await backend_impl.prepare(DeviceSpec(node=s.node, device=s.device, cluster="c1"))
    await backend_impl.create(s)
    await backend_impl.destroy(s)

    seen = {word for argv in nodes.argvs for word in argv if "/pwned" in word}
    assert seen == {word for word in whole_words if "/pwned" in word}
    assert ("mount", "-o", options, "--", source, mount) in nodes.argvs  # it went all the way through
    for argv in nodes.argvs:
        if argv[0] == "sh":  # the only shell: a constant script, values as positional parameters
            assert argv[1:4] in (("-c", commands.FSTAB_ADD_SCRIPT, "sh"), ("-c", commands.FSTAB_REMOVE_SCRIPT, "sh"))
            assert HOSTILE not in commands.FSTAB_ADD_SCRIPT + commands.FSTAB_REMOVE_SCRIPT
