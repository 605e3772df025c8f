"""The node service against a fake node: validation of every call, idempotency, stale mounts, read-only."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from provisioner.csi import errors
from provisioner.csi.mounter import CommandOutput
from provisioner.csi.node import NodeService
from provisioner.csi.proto import csi_pb2
from provisioner.csi.state import StateStore
from tests.unit.csi import requests as req
from tests.unit.csi.conftest import FakeCluster
from tests.unit.csi.fakes import OTHER_ID, STAGING, TARGET, TARGET2, VOLUME_ID, FakeMounter

Mode = csi_pb2.VolumeCapability.AccessMode
FOREIGN = "/etc/kubernetes"
BLOCK = csi_pb2.VolumeCapability(
    block=csi_pb2.VolumeCapability.BlockVolume(),
    access_mode=csi_pb2.VolumeCapability.AccessMode(mode=Mode.SINGLE_NODE_WRITER),
)
NO_MODE = csi_pb2.VolumeCapability(mount=csi_pb2.VolumeCapability.MountVolume())

Call = Callable[[NodeService], Awaitable[Any]]

INVALID: list[tuple[str, Call, str]] = [
    # NodeStageVolume
    ("stage: no volume id", lambda n: n.stage(req.stage(volume_id="")), "volume_id"),
    ("stage: volume id not hex", lambda n: n.stage(req.stage(volume_id="fake-vol-id-1")), "volume_id"),
    ("stage: no staging path", lambda n: n.stage(req.stage(staging_target_path="")), "staging_target_path"),
    ("stage: relative path", lambda n: n.stage(req.stage(staging_target_path="some/path")), "staging_target_path"),
    ("stage: foreign path", lambda n: n.stage(req.stage(staging_target_path=FOREIGN)), "staging_target_path"),
    (
        "stage: .. in path",
        lambda n: n.stage(req.stage(staging_target_path=f"{STAGING}/../../x")),
        "staging_target_path",
    ),
    (
        "stage: // in path",
        lambda n: n.stage(req.stage(staging_target_path="/var/lib/kubelet//x")),
        "staging_target_path",
    ),
    (
        "stage: kubelet root itself",
        lambda n: n.stage(req.stage(staging_target_path="/var/lib/kubelet")),
        "staging_target_path",
    ),
    ("stage: no capability", lambda n: n.stage(req.stage(volume_capability=None)), "volume_capability"),
    ("stage: block", lambda n: n.stage(req.stage(volume_capability=BLOCK)), "volume_capability.block"),
    ("stage: no access mode", lambda n: n.stage(req.stage(volume_capability=NO_MODE)), "volume_capability.access_mode"),
    (
        "stage: refused mount option",
        lambda n: n.stage(req.stage(volume_capability=req.capability(flags=("log-file=/etc/passwd",)))),
        "volume_capability.mount.mount_flags",
    ),
    ("stage: no context", lambda n: n.stage(req.stage(volume_context={})), "volume_context[volume]"),
    (
        "stage: no servers",
        lambda n: n.stage(req.stage(volume_context={"volume": "vol_a"})),
        "volume_context[servers]",
    ),
    (
        "stage: hostile server",
        lambda n: n.stage(req.stage(volume_context={"volume": "vol_a", "servers": "-oremount"})),
        "volume_context[servers]",
    ),
    (
        "stage: unknown attribute",
        lambda n: n.stage(req.stage(volume_context={**req.CONTEXT, "mount": "x:/y"})),
        "volume_context[mount]",
    ),
    # NodePublishVolume
    ("publish: no volume id", lambda n: n.publish(req.publish(volume_id="")), "volume_id"),
    ("publish: no target", lambda n: n.publish(req.publish(target_path="")), "target_path"),
    ("publish: relative target", lambda n: n.publish(req.publish(target_path="target")), "target_path"),
    ("publish: foreign target", lambda n: n.publish(req.publish(target_path="/root/x")), "target_path"),
    ("publish: no staging path", lambda n: n.publish(req.publish(staging_target_path="")), "staging_target_path"),
    (
        "publish: foreign staging path",
        lambda n: n.publish(req.publish(staging_target_path=FOREIGN)),
        "staging_target_path",
    ),
    (
        "publish: target is the staging path",
        lambda n: n.publish(req.publish(target_path=str(STAGING))),
        "target_path",
    ),
    ("publish: no capability", lambda n: n.publish(req.publish(volume_capability=None)), "volume_capability"),
    ("publish: no context", lambda n: n.publish(req.publish(volume_context={})), "volume_context[volume]"),
    # NodeUnpublishVolume / NodeUnstageVolume
    ("unpublish: no volume id", lambda n: n.unpublish(req.unpublish(volume_id="")), "volume_id"),
    ("unpublish: no target", lambda n: n.unpublish(req.unpublish(target="")), "target_path"),
    ("unpublish: foreign target", lambda n: n.unpublish(req.unpublish(target="/mnt")), "target_path"),
    ("unstage: no volume id", lambda n: n.unstage(req.unstage(volume_id="")), "volume_id"),
    ("unstage: no staging path", lambda n: n.unstage(req.unstage(staging="")), "staging_target_path"),
    ("unstage: relative staging path", lambda n: n.unstage(req.unstage(staging="a/b")), "staging_target_path"),
    # Stats / expand / health
    (
        "stats: no volume id",
        lambda n: n.stats(csi_pb2.NodeGetVolumeStatsRequest(volume_path="some/path")),
        "volume_id",
    ),
    (
        "stats: no volume path",
        lambda n: n.stats(csi_pb2.NodeGetVolumeStatsRequest(volume_id=VOLUME_ID)),
        "volume_path",
    ),
    (
        "expand: no volume id",
        lambda n: n.expand(csi_pb2.NodeExpandVolumeRequest(volume_path=str(TARGET))),
        "volume_id",
    ),
    (
        "expand: no volume path",
        lambda n: n.expand(csi_pb2.NodeExpandVolumeRequest(volume_id=VOLUME_ID)),
        "volume_path",
    ),
    (
        "expand: block capability",
        lambda n: n.expand(
            csi_pb2.NodeExpandVolumeRequest(volume_id=VOLUME_ID, volume_path=str(TARGET), volume_capability=BLOCK)
        ),
        "volume_capability.block",
    ),
    ("health: no volume id", lambda n: n.health(csi_pb2.NodeGetVolumeHealthRequest()), "volume_id"),
    (
        "health: relative publish path",
        lambda n: n.health(csi_pb2.NodeGetVolumeHealthRequest(volume_id=VOLUME_ID, volume_publish_path="x")),
        "volume_publish_path",
    ),
]


@pytest.mark.parametrize(("case", "call", "field"), INVALID, ids=[c[0] for c in INVALID])
async def test_invalid_requests_name_the_field_and_touch_nothing(
    node: NodeService, mounter: FakeMounter, case: str, call: Call, field: str
) -> None:
    with pytest.raises(errors.InvalidArgument) as raised:
        await call(node)
    assert raised.value.field == field, str(raised.value)
    assert raised.value.code.name == "INVALID_ARGUMENT"
    assert str(raised.value).startswith(field + ":")
    assert mounter.calls == []


NOT_FOUND: list[tuple[str, Call]] = [
    (
        "stats: unknown id, relative path (csi-sanity)",
        lambda n: n.stats(csi_pb2.NodeGetVolumeStatsRequest(volume_id="fake-vol-id-1", volume_path="some/path")),
    ),
    (
        "stats: known id, relative path (csi-sanity)",
        lambda n: n.stats(csi_pb2.NodeGetVolumeStatsRequest(volume_id=VOLUME_ID, volume_path="some/path")),
    ),
    (
        "stats: foreign path",
        lambda n: n.stats(csi_pb2.NodeGetVolumeStatsRequest(volume_id=VOLUME_ID, volume_path="/etc")),
    ),
    (
        "stats: another volume's id",
        lambda n: n.stats(csi_pb2.NodeGetVolumeStatsRequest(volume_id=OTHER_ID, volume_path=str(TARGET))),
    ),
    (
        "stats: not mounted there",
        lambda n: n.stats(csi_pb2.NodeGetVolumeStatsRequest(volume_id=VOLUME_ID, volume_path=str(TARGET2))),
    ),
    (
        "expand: unknown id (csi-sanity)",
        lambda n: n.expand(csi_pb2.NodeExpandVolumeRequest(volume_id="fake-vol-id-1", volume_path="some/path")),
    ),
    ("health: unknown id", lambda n: n.health(csi_pb2.NodeGetVolumeHealthRequest(volume_id=OTHER_ID))),
]


@pytest.mark.parametrize(("case", "call"), NOT_FOUND, ids=[c[0] for c in NOT_FOUND])
async def test_read_only_calls_answer_not_found_where_no_volume_of_ours_can_be(
    node: NodeService, case: str, call: Call
) -> None:
    await node.stage(req.stage())
    await node.publish(req.publish())
    with pytest.raises(errors.NotFound):
        await call(node)


async def test_stage_mounts_with_backups_and_vetted_options(
    node: NodeService, mounter: FakeMounter, state: StateStore
) -> None:
    flags = ("acl", "log-level=WARNING,attribute-timeout=5")
    await node.stage(req.stage(volume_capability=req.capability(flags=flags)))
    log_file = state.log_file(VOLUME_ID)
    assert mounter.calls == [
        (
            "mount",
            "-n",
            "-t",
            "glusterfs",
            "-o",
            f"acl,log-level=WARNING,attribute-timeout=5,log-file={log_file},"
            "backup-volfile-servers=10.77.0.12:10.77.0.13",
            "--",
            "10.77.0.11:/vol_a",
            str(STAGING),
        )
    ]
    [entry] = mounter.mounts_at(STAGING)
    assert entry.gluster_volume == "vol_a"
    record = state.get(VOLUME_ID)
    assert record is not None and record.staging_path == str(STAGING) and record.servers[0] == "10.77.0.11"


async def test_stage_twice_is_ok_and_mounts_once(node: NodeService, mounter: FakeMounter) -> None:
    await node.stage(req.stage())
    await node.stage(req.stage())
    assert len(mounter.calls) == 1
    assert len(mounter.mounts_at(STAGING)) == 1


async def test_stage_over_another_volume_is_already_exists(node: NodeService, mounter: FakeMounter) -> None:
    await node.stage(req.stage())
    other = {"volume": "vol_b", "servers": "10.77.0.11"}
    with pytest.raises(errors.AlreadyExists, match="vol_b"):
        await node.stage(req.stage(volume_id=OTHER_ID, volume_context=other))
    assert len(mounter.calls) == 1


async def test_stage_creates_a_missing_staging_directory(node: NodeService, mounter: FakeMounter) -> None:
    mounter.directories.discard(STAGING)
    await node.stage(req.stage())
    assert STAGING in mounter.directories


async def test_read_only_access_mode_stages_read_only(node: NodeService, mounter: FakeMounter) -> None:
    await node.stage(req.stage(volume_capability=req.capability(Mode.MULTI_NODE_READER_ONLY)))
    assert mounter.calls[0][5].startswith("ro,")
    assert mounter.mounts_at(STAGING)[0].read_only


async def test_publish_binds_and_twice_is_ok(node: NodeService, mounter: FakeMounter) -> None:
    await node.stage(req.stage())
    await node.publish(req.publish())
    await node.publish(req.publish())
    assert mounter.calls[1:] == [("mount", "-n", "--bind", "--", str(STAGING), str(TARGET))]
    [bind] = mounter.mounts_at(TARGET)
    assert bind.device == mounter.mounts_at(STAGING)[0].device
    assert not bind.read_only


async def test_read_only_publish_remounts_the_bind_read_only(node: NodeService, mounter: FakeMounter) -> None:
    await node.stage(req.stage())
    await node.publish(req.publish(readonly=True))
    assert mounter.calls[1:] == [
        ("mount", "-n", "--bind", "--", str(STAGING), str(TARGET)),
        ("mount", "-n", "-o", "remount,bind,ro", "--", str(TARGET)),
    ]
    assert mounter.mounts_at(TARGET)[0].read_only
    assert not mounter.mounts_at(STAGING)[0].read_only


async def test_publish_again_with_the_other_readonly_is_already_exists(node: NodeService) -> None:
    await node.stage(req.stage())
    await node.publish(req.publish(readonly=True))
    with pytest.raises(errors.AlreadyExists, match="read-only"):
        await node.publish(req.publish(readonly=False))


async def test_single_writer_refuses_a_second_target(node: NodeService, mounter: FakeMounter) -> None:
    single = req.capability(Mode.SINGLE_NODE_SINGLE_WRITER)
    await node.stage(req.stage(volume_capability=single))
    await node.publish(req.publish(volume_capability=single))
    with pytest.raises(errors.FailedPrecondition, match="SINGLE_NODE_SINGLE_WRITER"):
        await node.publish(req.publish(volume_capability=single, target_path=str(TARGET2)))
    assert TARGET2 not in mounter.directories, "a refused publish leaves no directory behind"
    # a multi-writer volume may go to both
    await node.publish(req.publish(target_path=str(TARGET2)))


async def test_a_failed_bind_removes_the_target_directory_it_made(node: NodeService, mounter: FakeMounter) -> None:
    await node.stage(req.stage())
    original = mounter.run

    async def failing_bind(argv: tuple[str, ...], *, timeout: float) -> CommandOutput:
        if argv[:3] == ("mount", "-n", "--bind"):
            return CommandOutput(32, "mount: permission denied")
        return await original(argv, timeout=timeout)

    mounter.run = failing_bind  # type: ignore[method-assign]
    with pytest.raises(errors.CommandError, match="permission denied"):
        await node.publish(req.publish())
    assert TARGET not in mounter.directories
    assert mounter.mounts_at(TARGET) == []


async def test_unpublish_and_unstage_are_idempotent(node: NodeService, mounter: FakeMounter, state: StateStore) -> None:
    await node.stage(req.stage())
    await node.publish(req.publish())
    for _ in range(2):
        await node.unpublish(req.unpublish())
    assert mounter.mounts_at(TARGET) == []
    assert TARGET not in mounter.directories, "the target directory the driver made is removed"
    for _ in range(2):
        await node.unstage(req.unstage())
    assert mounter.entries == []
    assert STAGING in mounter.directories, "kubelet's staging directory stays"
    assert state.get(VOLUME_ID) is None
    umounts = [c for c in mounter.calls if c[0] == "umount"]
    assert umounts == [("umount", "-n", "--", str(TARGET)), ("umount", "-n", "--", str(STAGING))]


async def test_unpublish_and_unstage_of_paths_never_used_are_ok(node: NodeService, mounter: FakeMounter) -> None:
    await node.unpublish(req.unpublish(target=TARGET2))
    await node.unstage(req.unstage(volume_id=OTHER_ID))
    assert mounter.calls == []


async def test_unstage_leaves_a_mount_of_another_filesystem_alone(node: NodeService, mounter: FakeMounter) -> None:
    await node.stage(req.stage())
    mounter.entries[0] = dataclasses.replace(mounter.entries[0], fstype="ext4")
    with pytest.raises(errors.FailedPrecondition, match="ext4"):
        await node.unstage(req.unstage())


async def test_stale_staging_mount_is_remounted_by_publish(node: NodeService, mounter: FakeMounter) -> None:
    await node.stage(req.stage())
    await node.publish(req.publish())
    mounter.kill_client(STAGING)
    await node.publish(req.publish(target_path=str(TARGET2)))
    commands = [c[:4] for c in mounter.calls[2:]]
    assert commands == [
        ("umount", "-n", "-l", "--"),  # the dead staging mount
        ("mount", "-n", "-t", "glusterfs"),  # mounted again
        ("mount", "-n", "--bind", "--"),  # the new pod's bind
    ]
    staged = mounter.mounts_at(STAGING)[0]
    assert staged.device not in mounter.dead
    assert mounter.mounts_at(TARGET2)[0].device == staged.device
    # the old pod's bind is still stale: republishing it replaces it
    await node.publish(req.publish())
    assert mounter.mounts_at(TARGET)[0].device == staged.device


async def test_stale_staging_mount_is_remounted_by_stage(node: NodeService, mounter: FakeMounter) -> None:
    await node.stage(req.stage())
    mounter.kill_client(STAGING)
    await node.stage(req.stage())
    assert [c[:3] for c in mounter.calls[1:]] == [("umount", "-n", "-l"), ("mount", "-n", "-t")]
    assert mounter.mounts_at(STAGING)[0].device not in mounter.dead


async def test_stale_mounts_are_reported_by_health_and_stats(node: NodeService, mounter: FakeMounter) -> None:
    await node.stage(req.stage())
    await node.publish(req.publish())
    healthy = await node.health(csi_pb2.NodeGetVolumeHealthRequest(volume_id=VOLUME_ID))
    assert healthy.volume_health.volume_id == VOLUME_ID and list(healthy.volume_health.health_statuses) == []
    mounter.kill_client(STAGING)
    sick = await node.health(csi_pb2.NodeGetVolumeHealthRequest(volume_id=VOLUME_ID, volume_publish_path=str(TARGET)))
    reasons = [(e.status, e.reason) for e in sick.volume_health.health_statuses]
    assert reasons == [(csi_pb2.INACCESSIBLE, "StaleMount"), (csi_pb2.INACCESSIBLE, "StaleMount")]
    with pytest.raises(errors.FailedPrecondition, match="Transport endpoint is not connected"):
        await node.stats(csi_pb2.NodeGetVolumeStatsRequest(volume_id=VOLUME_ID, volume_path=str(TARGET)))
    assert [r.volume for r in await node.stale_volumes()] == ["vol_a"]


async def test_unpublish_and_unstage_clear_stale_mounts(node: NodeService, mounter: FakeMounter) -> None:
    await node.stage(req.stage())
    await node.publish(req.publish())
    mounter.kill_client(STAGING)
    await node.unpublish(req.unpublish())
    await node.unstage(req.unstage())
    assert mounter.entries == []
    assert [c for c in mounter.calls if c[0] == "umount"] == [
        ("umount", "-n", "-l", "--", str(TARGET)),
        ("umount", "-n", "-l", "--", str(STAGING)),
    ]


async def test_stats_report_bytes_and_inodes(node: NodeService) -> None:
    await node.stage(req.stage())
    await node.publish(req.publish())
    for path in (TARGET, STAGING):
        stats = await node.stats(csi_pb2.NodeGetVolumeStatsRequest(volume_id=VOLUME_ID, volume_path=str(path)))
        by_unit = {u.unit: (u.total, u.available, u.used) for u in stats.usage}
        assert by_unit == {
            csi_pb2.VolumeUsage.BYTES: (10 * 1024**3, 7 * 1024**3, 3 * 1024**3),
            csi_pb2.VolumeUsage.INODES: (1000, 900, 100),
        }


async def test_expand_has_nothing_to_do_and_reports_the_size(node: NodeService, mounter: FakeMounter) -> None:
    await node.stage(req.stage())
    await node.publish(req.publish())
    calls = len(mounter.calls)
    response = await node.expand(csi_pb2.NodeExpandVolumeRequest(volume_id=VOLUME_ID, volume_path=str(TARGET)))
    assert response.capacity_bytes == 10 * 1024**3
    assert len(mounter.calls) == calls


async def test_failed_mount_names_the_server_and_posts_an_event_on_the_claim(
    node: NodeService, mounter: FakeMounter, cluster: FakeCluster
) -> None:
    from provisioner.csi.events import ClaimRef

    cluster.claims[VOLUME_ID] = ClaimRef("team-a", "data", "7c1a6a57-1d4f-4b8e-9a55-3f2b5d9b8c11")
    log = (
        "[2026-12-01 21:31:49.808002 +0000] I [glusterfsd-mgmt.c:2673:mgmt_rpc_notify] 0-glusterfsd-mgmt: "
        "disconnected from remote-host: 10.77.0.11\n"
        "[2026-12-01 21:31:55.809664 +0000] I [glusterfsd-mgmt.c:2712:mgmt_rpc_notify] 0-glusterfsd-mgmt: "
        "Exhausted all volfile servers\n"
    )
    mounter.fail_mount = (1, "Mounting glusterfs on /x failed.\n", log)
    with pytest.raises(errors.MountFailed) as raised:
        await node.stage(req.stage())
    assert raised.value.failure_reason == "ServerUnreachable"
    assert raised.value.server == "10.77.0.11"
    assert raised.value.code.name == "INTERNAL"
    [(namespace, event)] = cluster.created
    assert namespace == "team-a"
    assert event["involvedObject"]["name"] == "data" and event["reason"] == "MountFailed"
    assert "storage server 10.77.0.11" in event["message"] and event["type"] == "Warning"
    # the same failure again raises the count of that event
    with pytest.raises(errors.MountFailed):
        await node.stage(req.stage())
    assert len(cluster.created) == 1 and cluster.bumped[0][2] == 2


async def test_mount_timeout_is_a_failure_with_reason_timeout(node: NodeService, mounter: FakeMounter) -> None:
    mounter.mount_timeout = True
    with pytest.raises(errors.MountFailed) as raised:
        await node.stage(req.stage())
    assert raised.value.failure_reason == "Timeout"


async def test_a_mount_that_appears_after_a_timeout_is_undone(node: NodeService, mounter: FakeMounter) -> None:
    original = mounter.run

    async def slow(argv: tuple[str, ...], *, timeout: float) -> CommandOutput:
        result = await original(argv, timeout=timeout)
        if argv[:4] == ("mount", "-n", "-t", "glusterfs"):
            return CommandOutput(-9, "", timed_out=True)  # killed, but the mount was made
        return result

    mounter.run = slow  # type: ignore[method-assign]
    with pytest.raises(errors.MountFailed, match="Timeout"):
        await node.stage(req.stage())
    assert mounter.mounts_at(STAGING) == []
    assert mounter.calls[-1] == ("umount", "-n", "-l", "--", str(STAGING))


async def test_capabilities_and_info(node: NodeService) -> None:
    RPC = csi_pb2.NodeServiceCapability.RPC
    kinds = {c.rpc.type for c in node.capabilities().capabilities}
    assert kinds == {
        RPC.STAGE_UNSTAGE_VOLUME,
        RPC.GET_VOLUME_STATS,
        RPC.EXPAND_VOLUME,
        RPC.SINGLE_NODE_MULTI_WRITER,
        RPC.GET_VOLUME_HEALTH,
        RPC.GET_STORAGE_HEALTH,
    }
    info = node.info()
    assert info.node_id == "node-a" and info.max_volumes_per_node == 0
    assert dict(info.accessible_topology.segments) == {"topology.glusterfs.gluster.org/zone": "z1"}
    node.set_zone("")
    assert not node.info().HasField("accessible_topology")
