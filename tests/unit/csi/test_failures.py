"""Mount failures classified from real glusterfs 10.3 client logs (tests/fixtures/csi/client-logs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.csi.failures import MAX_DETAIL, REASONS, classify

LOGS = Path(__file__).resolve().parents[2] / "fixtures" / "csi" / "client-logs"
FAILED = "Mounting glusterfs on /mnt failed.\n"


@pytest.mark.parametrize(
    ("log", "servers", "reason", "server"),
    [
        ("refused-single.log", ("127.0.0.1",), "ServerUnreachable", "127.0.0.1"),
        ("refused-with-backups.log", ("127.0.0.1", "127.0.0.2", "127.0.0.3"), "ServerUnreachable", "127.0.0.1"),
        # a real glusterd that has no such volume
        ("volume-not-found.log", ("10.77.0.11", "10.77.0.12", "10.77.0.13"), "VolumeNotFound", "10.77.0.11"),
        # a stopped volume: the volfile comes, no brick answers; the first failing brick's host is named
        ("volume-stopped.log", ("10.77.0.11", "10.77.0.12", "10.77.0.13"), "BricksUnreachable", "10.77.0.11"),
        # auth.allow excludes the client (mount.glusterfs exits 0 here: only the mount table tells)
        ("auth-rejected.log", ("10.77.0.11", "10.77.0.12", "10.77.0.13"), "AuthRejected", "10.77.0.11"),
    ],
)
def test_captured_logs(log: str, servers: tuple[str, ...], reason: str, server: str | None) -> None:
    failure = classify(output=FAILED, log=(LOGS / log).read_text(), servers=servers)
    assert (failure.reason, failure.server) == (reason, server)
    assert failure.reason in REASONS
    assert len(failure.detail) <= MAX_DETAIL


def test_details_come_from_the_log() -> None:
    stopped = classify(output=FAILED, log=(LOGS / "volume-stopped.log").read_text(), servers=("10.77.0.11",))
    assert stopped.detail.startswith("0-csicap_1ab67390-client-0: failed to get the port number for remote subvolume")
    missing = classify(output=FAILED, log=(LOGS / "volume-not-found.log").read_text(), servers=("10.77.0.11",))
    assert missing.detail == "0-mgmt: failed to fetch volume file (key:/csi_no_such_volume)"
    auth = classify(output="", log=(LOGS / "auth-rejected.log").read_text(), servers=("10.77.0.11",), exit_status=0)
    assert "SETVOLUME on remote-host failed [{remote-error=Authentication failed}" in auth.detail


def test_timeout_names_the_last_server_tried() -> None:
    log = (LOGS / "refused-with-backups.log").read_text().split("Exhausted")[0]
    failure = classify(output="", log=log, servers=("127.0.0.1", "127.0.0.2"), timed_out=True)
    assert (failure.reason, failure.server) == ("Timeout", "127.0.0.3")


def test_missing_helper_and_fuse() -> None:
    missing = classify(output="mount: /mnt: unknown filesystem type 'glusterfs'.", log="", servers=("h",))
    assert missing.reason == "HelperMissing"
    fuse = classify(output=FAILED, log="[x] E [mount.c:1] 0-glusterfs-fuse: fuse: device not found", servers=("h",))
    assert fuse.reason == "FuseUnavailable"


def test_unknown_failure_keeps_a_bounded_excerpt() -> None:
    log = "[2026-12-01 21:31:49.7 +0000] E [MSGID: 1] [x.c:1:f] 0-foo: " + "y" * 5000
    failure = classify(output=FAILED, log=log, servers=("h",))
    assert failure.reason == "Other" and failure.server is None
    assert failure.detail.startswith("0-foo: yyy") and len(failure.detail) == MAX_DETAIL


def test_describe_names_the_server() -> None:
    failure = classify(output=FAILED, log=(LOGS / "refused-single.log").read_text(), servers=("127.0.0.1",))
    assert "storage server 127.0.0.1" in failure.describe()
