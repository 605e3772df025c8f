"""The gRPC face over a real unix socket: status codes, registration, identity, probe, metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY

from provisioner.csi.errors import InvalidArgument
from provisioner.csi.identity import IdentityService, Prerequisites
from provisioner.csi.node import NodeService
from provisioner.csi.proto import csi_pb2, csi_pb2_grpc, pluginregistration_pb2, pluginregistration_pb2_grpc
from provisioner.csi.registration import Registration
from provisioner.csi.service import IdentityServicer, NodeServicer, RegistrationServicer, answer, storage_health
from tests.unit.csi import requests as req
from tests.unit.csi.fakes import STAGING, TARGET, VOLUME_ID, FakeMounter


def prerequisites(tmp_path: Path, *, helper: bool = True, fuse: bool = True) -> Prerequisites:
    device = Path("/dev/null") if fuse else tmp_path / "no-fuse"  # /dev/null: a character device
    return Prerequisites(fuse_device=device, find_helper=lambda name: "/sbin/mount.glusterfs" if helper else None)


class Driver:
    def __init__(self, channel: grpc.aio.Channel, registration: Registration) -> None:
        self.identity = csi_pb2_grpc.IdentityStub(channel)
        self.node = csi_pb2_grpc.NodeStub(channel)
        self.registration = pluginregistration_pb2_grpc.RegistrationStub(channel)
        self.registration_state = registration


@pytest.fixture
async def driver(node: NodeService, tmp_path: Path) -> AsyncIterator[Driver]:
    socket = tmp_path / "csi.sock"
    identity = IdentityService(
        driver_name="glusterfs.gluster.org", prerequisites=prerequisites(tmp_path), has_zone=lambda: bool(node.zone)
    )
    registration = Registration("glusterfs.gluster.org", endpoint=str(socket))
    server = grpc.aio.server()
    csi_pb2_grpc.add_IdentityServicer_to_server(IdentityServicer(identity), server)
    csi_pb2_grpc.add_NodeServicer_to_server(NodeServicer(node, lambda: storage_health(node, identity)), server)
    pluginregistration_pb2_grpc.add_RegistrationServicer_to_server(RegistrationServicer(registration), server)
    server.add_insecure_port(f"unix://{socket}")
    await server.start()
    async with grpc.aio.insecure_channel(f"unix://{socket}") as channel:
        yield Driver(channel, registration)
    await server.stop(0)


def counted(operation: str, code: str) -> float:
    value = REGISTRY.get_sample_value("provisioner_csi_operations_total", {"operation": operation, "code": code})
    return value or 0.0


async def test_registration_get_info_and_notify(driver: Driver, tmp_path: Path) -> None:
    info = await driver.registration.GetInfo(pluginregistration_pb2.InfoRequest())
    assert (info.type, info.name, info.endpoint) == ("CSIPlugin", "glusterfs.gluster.org", str(tmp_path / "csi.sock"))
    assert list(info.supported_versions) == ["1.0.0"]
    await driver.registration.NotifyRegistrationStatus(
        pluginregistration_pb2.RegistrationStatus(plugin_registered=False, error="version 2.0 unsupported")
    )
    await driver.registration.NotifyRegistrationStatus(
        pluginregistration_pb2.RegistrationStatus(plugin_registered=True)
    )
    assert driver.registration_state.notifications == [(False, "version 2.0 unsupported"), (True, "")]
    assert driver.registration_state.registered is True


async def test_identity(driver: Driver, node: NodeService) -> None:
    info = await driver.identity.GetPluginInfo(csi_pb2.GetPluginInfoRequest())
    assert info.name == "glusterfs.gluster.org" and info.vendor_version
    caps = await driver.identity.GetPluginCapabilities(csi_pb2.GetPluginCapabilitiesRequest())
    Service = csi_pb2.PluginCapability.Service
    assert [c.service.type for c in caps.capabilities if c.HasField("service")] == [
        Service.VOLUME_ACCESSIBILITY_CONSTRAINTS
    ]
    assert [c.volume_expansion.type for c in caps.capabilities if c.HasField("volume_expansion")] == [
        csi_pb2.PluginCapability.VolumeExpansion.ONLINE
    ]
    node.set_zone("")
    caps = await driver.identity.GetPluginCapabilities(csi_pb2.GetPluginCapabilitiesRequest())
    assert not [c for c in caps.capabilities if c.HasField("service")], "no zone, no topology capability"
    probe = await driver.identity.Probe(csi_pb2.ProbeRequest())
    assert probe.ready.value is True


@pytest.mark.parametrize(("helper", "fuse"), [(False, True), (True, False), (False, False)])
def test_probe_is_not_ready_without_mount_helper_or_fuse(tmp_path: Path, helper: bool, fuse: bool) -> None:
    identity = IdentityService(
        driver_name="d", prerequisites=prerequisites(tmp_path, helper=helper, fuse=fuse), has_zone=lambda: False
    )
    response, problems = identity.probe()
    assert response.ready.value is False
    assert any("mount.glusterfs" in p for p in problems) == (not helper)
    assert any("fuse" in p for p in problems) == (not fuse)


async def test_errors_become_status_codes_naming_the_field(driver: Driver) -> None:
    before = counted("NodePublishVolume", "INVALID_ARGUMENT")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await driver.node.NodePublishVolume(req.publish(target_path="relative/target"))
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (raised.value.details() or "").startswith("target_path:")
    assert counted("NodePublishVolume", "INVALID_ARGUMENT") == before + 1
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await driver.node.NodeGetVolumeStats(
            csi_pb2.NodeGetVolumeStatsRequest(volume_id="fake-vol-id", volume_path="some/path")
        )
    assert raised.value.code() is grpc.StatusCode.NOT_FOUND


async def test_a_whole_volume_life_over_grpc(driver: Driver, mounter: FakeMounter) -> None:
    before = counted("NodeStageVolume", "OK")
    await driver.node.NodeStageVolume(req.stage())
    await driver.node.NodePublishVolume(req.publish())
    stats = await driver.node.NodeGetVolumeStats(
        csi_pb2.NodeGetVolumeStatsRequest(volume_id=VOLUME_ID, volume_path=str(TARGET))
    )
    assert {u.unit for u in stats.usage} == {csi_pb2.VolumeUsage.BYTES, csi_pb2.VolumeUsage.INODES}
    health = await driver.node.NodeGetStorageHealth(csi_pb2.NodeGetStorageHealthRequest())
    assert list(health.backend_health) == []
    mounter.kill_client(STAGING)
    health = await driver.node.NodeGetStorageHealth(csi_pb2.NodeGetStorageHealthRequest())
    assert [(h.status, h.reason) for h in health.backend_health] == [(csi_pb2.STORAGE_DEGRADED, "StaleMounts")]
    await driver.node.NodeUnpublishVolume(req.unpublish())
    await driver.node.NodeUnstageVolume(req.unstage())
    assert mounter.entries == []
    assert counted("NodeStageVolume", "OK") == before + 1
    seconds = REGISTRY.get_sample_value(
        "provisioner_csi_operation_seconds_count", {"operation": "NodeStageVolume", "step": "mount"}
    )
    assert seconds is not None and seconds >= 1


async def test_unexpected_exceptions_are_internal(driver: Driver, mounter: FakeMounter) -> None:
    async def broken(path: Path) -> None:
        raise RuntimeError("disk on fire")

    mounter.probe = broken  # type: ignore[method-assign,assignment]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await driver.node.NodeStageVolume(req.stage())
    assert raised.value.code() is grpc.StatusCode.INTERNAL
    assert "RuntimeError: disk on fire" in (raised.value.details() or "")


async def test_node_info_and_capabilities_over_grpc(driver: Driver) -> None:
    info = await driver.node.NodeGetInfo(csi_pb2.NodeGetInfoRequest())
    assert info.node_id == "node-a"
    assert dict(info.accessible_topology.segments) == {"topology.glusterfs.gluster.org/zone": "z1"}
    caps = await driver.node.NodeGetCapabilities(csi_pb2.NodeGetCapabilitiesRequest())
    assert len(caps.capabilities) == 6


class RecordingContext:
    """A servicer context whose abort notes what a client reading the metrics would see then."""

    def __init__(self) -> None:
        self.seen_at_abort: float | None = None

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.seen_at_abort = counted("NodeUnstageVolume", code.name)
        raise grpc.aio.AbortError()


@pytest.mark.parametrize("failure", [InvalidArgument("volume_id", "missing"), RuntimeError("disk on fire")])
async def test_a_call_is_counted_before_its_status_reaches_the_client(failure: Exception) -> None:
    code = "INVALID_ARGUMENT" if isinstance(failure, InvalidArgument) else "INTERNAL"
    before = counted("NodeUnstageVolume", code)

    async def call() -> None:
        raise failure

    context = RecordingContext()
    with pytest.raises(grpc.aio.AbortError):
        await answer("NodeUnstageVolume", context, call)  # type: ignore[arg-type]
    assert context.seen_at_abort == before + 1
