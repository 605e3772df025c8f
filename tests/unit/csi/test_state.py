"""Per-volume records: written atomically, read back, tolerant of junk, never named by a hostile id."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.csi.state import StagedVolume, StateStore
from tests.unit.csi.fakes import OTHER_ID, VOLUME_ID

RECORD = StagedVolume(
    volume_id=VOLUME_ID,
    volume="vol_a",
    servers=("10.77.0.11", "10.77.0.12"),
    staging_path="/var/lib/kubelet/plugins/kubernetes.io/csi/glusterfs.gluster.org/abc/globalmount",
    read_only=False,
    options=("acl",),
)


def test_put_get_delete(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.put(RECORD)
    assert store.get(VOLUME_ID) == RECORD
    assert store.all() == [RECORD]
    store.log_file(VOLUME_ID).write_text("client log")
    store.delete(VOLUME_ID)
    assert store.get(VOLUME_ID) is None and list(tmp_path.iterdir()) == []


def test_unreadable_and_unknown_records(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    (tmp_path / f"{OTHER_ID}.json").write_text("{not json")
    (tmp_path / "junk.json").write_text("{}")
    assert store.get(OTHER_ID) is None
    assert store.all() == []
    assert store.get("../../etc/passwd") is None


@pytest.mark.parametrize("bad", ["../x", "", "0123", VOLUME_ID.upper(), VOLUME_ID + "/x"])
def test_hostile_ids_never_name_a_file(tmp_path: Path, bad: str) -> None:
    store = StateStore(tmp_path)
    with pytest.raises(ValueError, match="not a volume id"):
        store.log_file(bad)
