"""Golden argv for every node command: the exact words that run on a storage node."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from provisioner.domain import Disperse, Distribute, Replicate
from provisioner.storage import commands


def test_file_brick_commands() -> None:
    assert commands.mkdir("/m/b") == ("mkdir", "-p", "--", "/m/b")
    assert commands.is_mounted("/m/b") == ("mountpoint", "-q", "--", "/m/b")
    assert commands.create_image("/d/brick_1.img", 1073741824) == (
        "truncate",
        "-s",
        "1073741824",
        "--",
        "/d/brick_1.img",
    )
    assert commands.make_xfs("/d/b.img") == (
        "mkfs.xfs",
        "-f",
        "-q",
        "-i",
        "size=512",
        "-n",
        "size=8192",
        "--",
        "/d/b.img",
    )
    assert commands.make_xfs("/d/b.img", arbiter=True) == (
        "mkfs.xfs",
        "-f",
        "-q",
        "-i",
        "size=512,maxpct=100",
        "-n",
        "size=8192",
        "--",
        "/d/b.img",
    )
    assert commands.mount_loop("/d/b.img", "/m/b") == (
        "mount",
        "-o",
        "loop,rw,inode64,noatime,nouuid",
        "--",
        "/d/b.img",
        "/m/b",
    )
    assert commands.mount_xfs("/dev/mapper/vg_d-brick_b", "/m/b") == (
        "mount",
        "-o",
        "rw,inode64,noatime,nouuid",
        "--",
        "/dev/mapper/vg_d-brick_b",
        "/m/b",
    )
    assert commands.umount("/m/b") == ("umount", "--", "/m/b")
    assert commands.set_group("/m/b/brick", 2001) == ("chown", ":2001", "--", "/m/b/brick")
    assert commands.set_mode("/m/b/brick", "2775") == ("chmod", "2775", "--", "/m/b/brick")
    assert commands.tag_file("/d/b.img", "user.provisioner.volume", "ab" * 16) == (
        "setfattr",
        "-n",
        "user.provisioner.volume",
        "-v",
        "ab" * 16,
        "--",
        "/d/b.img",
    )
    assert commands.remove_file("/d/b.img") == ("rm", "-f", "--", "/d/b.img")
    assert commands.remove_dir("/m/b") == ("rmdir", "--", "/m/b")


def test_gluster_prefix_is_script_mode_xml_with_timeout() -> None:
    assert commands.volume_start("v", timeout=120) == (
        "gluster",
        "--mode=script",
        "--xml",
        "--timeout=120",
        "volume",
        "start",
        "v",
    )


def test_volume_create_replica_three() -> None:
    bricks = ["10.0.0.1:/b/1/brick", "10.0.0.2:/b/2/brick", "10.0.0.3:/b/3/brick"]
    assert commands.volume_create("vol_x", Replicate(), bricks, timeout=60) == (
        "gluster",
        "--mode=script",
        "--xml",
        "--timeout=60",
        "volume",
        "create",
        "vol_x",
        "replica",
        "3",
        *bricks,
    )


def test_volume_create_arbiter_disperse_distribute() -> None:
    assert commands.durability_args(Replicate(arbiter=True)) == ("replica", "3", "arbiter", "1")
    assert commands.durability_args(Disperse(data=4, redundancy=2)) == ("disperse-data", "4", "redundancy", "2")
    assert commands.durability_args(Distribute()) == ()


def test_lifecycle_commands() -> None:
    prefix = ("gluster", "--mode=script", "--xml", "--timeout=5")
    assert commands.volume_set("v", "user.provisioner.id", "ab", timeout=5) == (
        *prefix,
        "volume",
        "set",
        "v",
        "user.provisioner.id",
        "ab",
    )
    assert commands.volume_stop("v", timeout=5, force=True) == (*prefix, "volume", "stop", "v", "force")
    assert commands.volume_delete("v", timeout=5) == (*prefix, "volume", "delete", "v")
    assert commands.volume_info("v", timeout=5) == (*prefix, "volume", "info", "v")
    assert commands.volume_info(timeout=5) == (*prefix, "volume", "info")
    assert commands.brick_argument("10.0.0.1", "/b/brick") == "10.0.0.1:/b/brick"


def test_hostile_looking_values_stay_single_words() -> None:
    argv = commands.volume_set("v", "a.b", "x; rm -rf /", timeout=5)
    assert argv[-1] == "x; rm -rf /"  # one argv word; the SSH transport quotes it with shlex.join


def test_expansion_commands() -> None:
    prefix = ("gluster", "--mode=script", "--xml", "--timeout=5")
    assert commands.volume_add_brick("v", ["h1:/a/brick", "h2:/b/brick"], timeout=5) == (
        *prefix,
        "volume",
        "add-brick",
        "v",
        "h1:/a/brick",
        "h2:/b/brick",
    )
    assert commands.volume_rebalance_start("v", timeout=5) == (*prefix, "volume", "rebalance", "v", "start")
    assert commands.volume_heal_info("v", timeout=5) == (*prefix, "volume", "heal", "v", "info")


def test_lvm_device_commands_use_heketis_flags() -> None:
    assert commands.pv_volume_group("/dev/vdb") == ("lvm", "pvs", "--noheadings", "--options=vg_name", "/dev/vdb")
    assert commands.signatures("/dev/vdb") == ("wipefs", "--json", "/dev/vdb")
    assert commands.wipe_signatures("/dev/vdb") == ("wipefs", "--all", "/dev/vdb")
    assert commands.pv_resize("/dev/vdb") == ("lvm", "pvresize", "-qq", "/dev/vdb")
    assert commands.pv_create("/dev/vdb") == (
        "lvm",
        "pvcreate",
        "-qq",
        "--metadatasize=128M",
        "--dataalignment=256K",
        "/dev/vdb",
    )
    assert commands.vg_exists("vg_d") == ("lvm", "vgs", "--noheadings", "--options=vg_name", "vg_d")
    assert commands.vg_create("vg_d", "/dev/vdb", tags=(("provisioner.device", "d"),)) == (
        "lvm",
        "vgcreate",
        "-qq",
        "--physicalextentsize=4M",
        "--autobackup=n",
        "--addtag",
        "provisioner.device=d",
        "vg_d",
        "/dev/vdb",
    )
    with pytest.raises(ValueError, match="positional word"):
        commands.signatures("--all")


def test_sync_filesystem() -> None:
    assert commands.sync_filesystem("/m/b") == ("sync", "--file-system", "--", "/m/b")


def test_lvm_brick_commands_use_heketis_flags() -> None:
    assert commands.lv_exists("vg_d", "brick_b") == ("lvm", "lvs", "--noheadings", "--options=lv_name", "vg_d/brick_b")
    tags = (("provisioner.volume", "ab"), ("provisioner.brick", "cd"))
    assert commands.lv_tags(tags) == ("--addtag", "provisioner.volume=ab", "--addtag", "provisioner.brick=cd")
    assert commands.thin_pool_create("vg_d", "tp_b", pool_kib=1048576, metadata_kib=8192) == (
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
        "tp_b",
        "vg_d",
    )
    assert commands.thin_lv_create("vg_d", "tp_b", "brick_b", virtual_kib=1048576, tags=tags)[-4:] == (
        "--addtag",
        "provisioner.volume=ab",
        "--addtag",
        "provisioner.brick=cd",
    )
    assert commands.thin_lv_create("vg_d", "tp_b", "brick_b", virtual_kib=1024) == (
        "lvm",
        "lvcreate",
        "-qq",
        "--autobackup=n",
        "--thin",
        "vg_d/tp_b",
        "--virtualsize",
        "1024K",
        "--name",
        "brick_b",
    )
    assert commands.thin_count("vg_d", "tp_b") == ("lvm", "lvs", "--noheadings", "--options=thin_count", "vg_d/tp_b")
    assert commands.lv_remove("vg_d", "brick_b") == ("lvm", "lvremove", "--autobackup=n", "-f", "vg_d/brick_b")


def test_fstab_commands_are_a_constant_script_with_positional_values() -> None:
    assert commands.fstab_line("/d/b.img", "/m/b", commands.LOOP_MOUNT_OPTIONS) == (
        "/d/b.img /m/b xfs loop,rw,inode64,noatime,nouuid 0 0"
    )
    assert commands.fstab_add("/etc/fstab", "/dev/mapper/vg_d-brick_b", "/m/b", commands.XFS_MOUNT_OPTIONS) == (
        "sh",
        "-c",
        commands.FSTAB_ADD_SCRIPT,
        "sh",
        "/etc/fstab",
        "/m/b",
        "/dev/mapper/vg_d-brick_b /m/b xfs rw,inode64,noatime,nouuid 0 0",
    )
    assert commands.fstab_remove("/etc/fstab", "/m/b") == (
        "sh",
        "-c",
        commands.FSTAB_REMOVE_SCRIPT,
        "sh",
        "/etc/fstab",
        "/m/b",
    )
    assert commands.fstab_field("/a b\tc\\d\ne") == r"/a\040b\011c\134d\012e"
    assert commands.fstab_remove("/etc/fstab", "/m/a b")[-1] == r"/m/a\040b"


# --- the fstab scripts, run for real with the system sh on a scratch file ----------------------------


def run(argv: commands.Argv, cwd: Path) -> None:
    """From ``cwd``: a command substitution that ran would leave its file there."""
    subprocess.run(argv, check=True, capture_output=True, timeout=30, cwd=cwd)


def test_fstab_add_is_idempotent_keeps_other_lines_and_the_mode(tmp_path: Path) -> None:
    fstab = tmp_path / "fstab"
    fstab.write_text("# /m/b is mentioned in a comment\nUUID=1 / ext4 defaults 0 1")  # no final newline
    fstab.chmod(0o640)
    add = commands.fstab_add(str(fstab), "/d/b.img", "/m/b", commands.LOOP_MOUNT_OPTIONS)
    run(add, tmp_path)
    run(add, tmp_path)
    assert fstab.read_text() == (
        "# /m/b is mentioned in a comment\nUUID=1 / ext4 defaults 0 1\n"
        "/d/b.img /m/b xfs loop,rw,inode64,noatime,nouuid 0 0\n"
    )
    assert fstab.stat().st_mode & 0o777 == 0o640
    # Another line for the same mount point (say, older options) is replaced, not duplicated.
    run(commands.fstab_add(str(fstab), "/d/b.img", "/m/b", commands.XFS_MOUNT_OPTIONS), tmp_path)
    assert fstab.read_text().splitlines()[2:] == ["/d/b.img /m/b xfs rw,inode64,noatime,nouuid 0 0"]


def test_fstab_add_creates_a_missing_file(tmp_path: Path) -> None:
    fstab = tmp_path / "fstab"
    run(commands.fstab_add(str(fstab), "/d/b.img", "/m/b", commands.LOOP_MOUNT_OPTIONS), tmp_path)
    assert fstab.read_text() == "/d/b.img /m/b xfs loop,rw,inode64,noatime,nouuid 0 0\n"
    assert fstab.stat().st_mode & 0o777 == 0o644


def test_fstab_remove_drops_only_our_mount_point_and_tolerates_absence(tmp_path: Path) -> None:
    fstab = tmp_path / "fstab"
    run(commands.fstab_remove(str(fstab), "/m/b"), tmp_path)  # no file: nothing to do
    assert not fstab.exists()
    fstab.write_text("# /d/b.img /m/b\n/d/c.img /m/bb xfs loop 0 0\n/d/b.img /m/b xfs loop 0 0\n/x /m/b/c xfs d 0 0\n")
    run(commands.fstab_remove(str(fstab), "/m/b"), tmp_path)
    assert fstab.read_text() == "# /d/b.img /m/b\n/d/c.img /m/bb xfs loop 0 0\n/x /m/b/c xfs d 0 0\n"
    inode = fstab.stat().st_ino
    run(commands.fstab_remove(str(fstab), "/m/b"), tmp_path)  # already gone: the file is not rewritten
    assert fstab.stat().st_ino == inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fstab", "fstab.lock"]  # no temporary files left


def test_fstab_scripts_never_evaluate_values(tmp_path: Path) -> None:
    fstab = tmp_path / "fs $(touch pwned1) tab"
    mount = "/m/$(touch pwned2)/a b"
    source = "/d/`touch pwned3`;x.img"
    run(commands.fstab_add(str(fstab), source, mount, commands.LOOP_MOUNT_OPTIONS), tmp_path)
    assert fstab.read_text() == (
        r"/d/`touch\040pwned3`;x.img /m/$(touch\040pwned2)/a\040b xfs loop,rw,inode64,noatime,nouuid 0 0" + "\n"
    )
    run(commands.fstab_remove(str(fstab), mount), tmp_path)
    assert fstab.read_text() == ""
    assert not {"pwned1", "pwned2", "pwned3"} & set(os.listdir(tmp_path))


def test_concurrent_fstab_edits_lose_no_line(tmp_path: Path) -> None:
    """Bricks of one node are built in parallel: the lock serializes the read-modify-rename."""
    fstab = tmp_path / "fstab"
    run(commands.fstab_add(str(fstab), "/d/0.img", "/m/0", "loop"), tmp_path)
    adds = [commands.fstab_add(str(fstab), f"/d/{i}.img", f"/m/{i}", "loop") for i in range(1, 13)]
    processes = [subprocess.Popen(argv, cwd=tmp_path) for argv in [*adds, commands.fstab_remove(str(fstab), "/m/0")]]
    assert [p.wait(timeout=30) for p in processes] == [0] * len(processes)
    assert sorted(fstab.read_text().splitlines()) == sorted(f"/d/{i}.img /m/{i} xfs loop 0 0" for i in range(1, 13))


def test_replace_brick_command() -> None:
    assert commands.volume_replace_brick("vol_1", "h1:/a/brick", "h2:/b/brick", timeout=120) == (
        "gluster",
        "--mode=script",
        "--xml",
        "--timeout=120",
        "volume",
        "replace-brick",
        "vol_1",
        "h1:/a/brick",
        "h2:/b/brick",
        "commit",
        "force",
    )
