"""The mountinfo parser on lines captured from this machine: a glusterfs FUSE mount, its binds, escapes."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.csi import mountinfo
from provisioner.csi.mountinfo import MountInfoError, MountTable

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "csi"


@pytest.fixture
def table() -> MountTable:
    return MountTable.from_text((FIXTURES / "mountinfo-binds.txt").read_text())


def test_a_real_glusterfs_mount(table: MountTable) -> None:
    stage = table.at("/tmp/csicap/stage")
    assert stage is not None
    assert (stage.mount_id, stage.parent_id, stage.device, stage.root) == (49, 27, "0:40", "/")
    assert stage.fstype == "fuse.glusterfs" and stage.is_gluster
    assert stage.source == "10.77.0.11:/csicap_1ab67390"
    assert stage.gluster_volume == "csicap_1ab67390"
    assert not stage.read_only
    assert "allow_other" in stage.super_options and "max_read=131072" in stage.super_options


def test_binds_share_the_superblock_and_a_second_client_does_not(table: MountTable) -> None:
    stage = table.at("/tmp/csicap/stage")
    assert stage is not None
    binds = {e.mount_point for e in table.same_superblock(stage)}
    assert binds == {"/tmp/csicap/stage", "/tmp/csicap/pub", "/tmp/csicap/pubro", "/tmp/csicap/subbind"}
    second = table.at("/tmp/csicap/second")
    assert second is not None and second.gluster_volume == stage.gluster_volume and second.device != stage.device


def test_a_read_only_bind_and_a_subdirectory_bind(table: MountTable) -> None:
    pubro = table.at("/tmp/csicap/pubro")
    assert pubro is not None and pubro.read_only and "rw" in pubro.super_options
    sub = table.at("/tmp/csicap/subbind")
    assert sub is not None and sub.root == "/sub"
    ext4 = table.at("/tmp/csicap/b2")
    assert ext4 is not None and ext4.root == "/tmp/csicap/b1" and not ext4.is_gluster and ext4.gluster_volume is None


def test_octal_escapes_in_paths() -> None:
    table = MountTable.from_text((FIXTURES / "mountinfo-glusterfs.txt").read_text())
    spaced = table.at("/tmp/csicap/with space")
    assert spaced is not None and spaced.fstype == "tmpfs"
    assert mountinfo.unescape(r"a\011b\012c\134d") == "a\tb\nc\\d"


def test_every_captured_line_parses() -> None:
    for name in ("mountinfo-binds.txt", "mountinfo-glusterfs.txt"):
        entries = mountinfo.parse((FIXTURES / name).read_text())
        assert len(entries) > 20
        assert all(e.mount_point.startswith("/") for e in entries)
    assert [e.mount_point for e in mountinfo.gluster_mounts(entries)] == [
        "/tmp/csicap/stage",
        "/tmp/csicap/pub",
        "/tmp/csicap/pubro",
    ]


def test_optional_fields_before_the_separator() -> None:
    line = "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 shared:7 - ext3 /dev/root rw,errors=continue"
    entry = mountinfo.parse_line(line)
    assert (entry.mount_point, entry.fstype, entry.source) == ("/mnt2", "ext3", "/dev/root")


def test_stacked_mounts_the_last_one_wins() -> None:
    text = "40 27 0:40 / /k/x rw - fuse.glusterfs h:/a rw\n41 40 0:41 / /k/x rw - fuse.glusterfs h:/b rw\n"
    entry = MountTable.from_text(text).at(Path("/k/x"))
    assert entry is not None and entry.gluster_volume == "b"


@pytest.mark.parametrize(
    "line", ["", "36 35 98:0 /mnt1", "x y 98:0 / /m rw - ext4 /dev/x rw", "36 35 98:0 / /m rw ext4"]
)
def test_malformed_lines(line: str) -> None:
    with pytest.raises(MountInfoError):
        mountinfo.parse_line(line)


def test_the_live_table_of_this_process_parses() -> None:
    table = mountinfo.read()
    assert table.at("/") is not None
