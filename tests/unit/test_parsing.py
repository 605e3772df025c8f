"""Parsers fed output captured from the real gluster 10.3 nodes of the dev stack (tests/fixtures/gluster)."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.storage.parsing import (
    SnapshotInfo,
    UnparsableOutput,
    parse_heal_info,
    parse_op_result,
    parse_signatures,
    parse_snapshot_info,
    parse_volume_info,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gluster"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_success_verdicts() -> None:
    for name in ("create-ok.xml", "create-disperse.xml", "set-ok.xml", "start-ok.xml"):
        verdict = parse_op_result(fixture(name))
        assert verdict.ok, name
        assert verdict.message == ""


@pytest.mark.parametrize(
    ("name", "flag"),
    [
        ("create-exists.xml", "exists"),
        ("start-already-started.xml", "already_started"),
        ("stop-missing.xml", "missing"),
        ("info-missing.xml", "missing"),
        ("stop-not-started.xml", "not_started"),
    ],
)
def test_failure_verdicts_are_classified(name: str, flag: str) -> None:
    verdict = parse_op_result(fixture(name))
    assert not verdict.ok
    assert getattr(verdict, flag), verdict.message
    others = {"exists", "already_started", "missing", "not_started", "busy", "unreachable"} - {flag}
    assert not any(getattr(verdict, other) for other in others), verdict.message


def test_delete_of_started_volume_is_a_plain_failure() -> None:
    verdict = parse_op_result(fixture("delete-started.xml"))
    assert not verdict.ok
    assert "needs to be stopped" in verdict.message
    assert not verdict.missing


def test_multiline_error_is_kept_whole() -> None:
    verdict = parse_op_result(fixture("set-unknown-option.xml"))
    assert not verdict.ok
    assert verdict.message.startswith("option : no.such.option does not exist\nDid you mean")


def test_glusterd_down_prints_plain_text() -> None:
    verdict = parse_op_result(fixture("info-glusterd-down.txt"))
    assert not verdict.ok
    assert verdict.unreachable
    assert "Connection failed" in verdict.message


def test_busy_and_timeouts_are_recognised() -> None:
    busy = parse_op_result("", "volume stop: av2: failed: Another transaction is in progress. Please try again")
    assert busy.busy and not busy.ok
    assert parse_op_result("", "Error : Request timed out").unreachable
    assert parse_op_result("", "volume create: kv: failed: Host 10.77.0.13 not connected").unreachable


def test_replica_three_info() -> None:
    [volume] = parse_volume_info(fixture("info-replica3.xml"))
    assert volume.name == "capr"
    assert volume.status == "Started"
    assert volume.type == "Replicate"
    assert volume.brick_count == 3
    assert [b.host for b in volume.bricks] == ["10.77.0.11", "10.77.0.12", "10.77.0.13"]
    assert all(b.path == "/var/lib/provisioner/mounts/cap1/brick" for b in volume.bricks)
    assert not any(b.arbiter for b in volume.bricks)
    assert volume.options["user.provisioner.id"] == "0123456789abcdef0123456789abcdef"
    assert volume.options["nfs.disable"] == "on"


def test_arbiter_and_disperse_info() -> None:
    [arbiter] = parse_volume_info(fixture("info-arbiter.xml"))
    assert arbiter.status == "Created"
    assert [b.arbiter for b in arbiter.bricks] == [False, False, True]
    [disperse] = parse_volume_info(fixture("info-disperse.xml"))
    assert disperse.type == "Disperse"
    assert disperse.brick_count == 3


def test_missing_volume_info_has_no_volumes() -> None:
    assert parse_volume_info(fixture("info-missing.xml")) == []


def test_garbage_is_rejected_with_a_reason() -> None:
    with pytest.raises(UnparsableOutput, match="not an XML document"):
        parse_volume_info("<cliOutput><opRet>0</opRet>")
    with pytest.raises(UnparsableOutput, match="opRet"):
        parse_op_result("<cliOutput></cliOutput>")


def test_heal_info_of_a_replica_three_volume() -> None:
    """Captured from the dev nodes (gluster 10.3): ``volume heal <vol> info --xml``."""
    heals = parse_heal_info((FIXTURES / "heal-info.xml").read_text())
    assert [(h.host, h.connected, h.pending) for h in heals] == [
        ("10.77.0.11", True, 0),
        ("10.77.0.12", True, 0),
        ("10.77.0.13", True, 0),
    ]
    offline = (
        (FIXTURES / "heal-info.xml")
        .read_text()
        .replace(
            "<status>Connected</status>\n        <numberOfEntries>0</numberOfEntries>",
            "<status>Transport endpoint is not connected</status>\n        <numberOfEntries>-</numberOfEntries>",
            1,
        )
    )
    assert (parse_heal_info(offline)[0].connected, parse_heal_info(offline)[0].pending) == (False, None)


def test_snapshot_info_as_gluster_prints_it() -> None:
    [info] = parse_snapshot_info(fixture("snapshot-info.xml"))  # captured on a guest, GlusterFS 10.3
    assert info == SnapshotInfo(
        name="s1", description="provisioner:abc", snapshot_volume="df5f3d53c21e4b56a80faaac2bdc3d5e", origin="expv"
    )


def test_a_snapshot_volume_name_that_is_not_hex_is_refused() -> None:
    odd = fixture("snapshot-info.xml").replace("df5f3d53c21e4b56a80faaac2bdc3d5e", "x || lv_name=~.")
    with pytest.raises(UnparsableOutput, match="32 hex digits"):
        parse_snapshot_info(odd)


def test_wipefs_signatures_as_util_linux_prints_them() -> None:
    captured = '{\n   "signatures": [\n      {\n         "device": "sig.img",\n         "offset": "0x0",\n'
    captured += '         "type": "xfs",\n         "uuid": "2a289b42-e004-4f01-9257-8e7d2b022d29",\n'
    captured += '         "label": null\n      }\n   ]\n}\n'
    assert parse_signatures(captured) == ["xfs at 0x0"]
    assert parse_signatures('{\n   "signatures": [\n\n   ]\n}\n') == []
    with pytest.raises(UnparsableOutput):
        parse_signatures("wipefs: error: /dev/vdz: probing initialization failed")
