"""Golden argv for every node command: the exact words that run on a storage node."""

from __future__ import annotations

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
    assert commands.umount("/m/b") == ("umount", "--", "/m/b")
    assert commands.set_group("/m/b/brick", 2001) == ("chown", ":2001", "--", "/m/b/brick")
    assert commands.set_mode("/m/b/brick", "2775") == ("chmod", "2775", "--", "/m/b/brick")
    assert commands.tag_file("/d/b.img", "volume", "ab" * 16) == (
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
