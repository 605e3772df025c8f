"""The CSI node plugin against the real gluster nodes: FUSE mounts, binds, stale clients, events.

The driver runs as its own process (``python -m provisioner.csi``) on a unix socket under a
temporary kubelet root; the test plays kubelet: it makes the directories kubelet makes and calls
the driver over gRPC. The volume is a real replica-3 gluster volume created for the module.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from kubernetes_asyncio import client, config
from prometheus_client.parser import text_string_to_metric_families

from provisioner.csi.proto import csi_pb2, csi_pb2_grpc, pluginregistration_pb2, pluginregistration_pb2_grpc
from tests.integration.csi_stack import (
    DEV_STATE,
    Driver,
    GlusterNodes,
    GlusterVolume,
    client_pids,
    mounts_under,
    remove_tree,
    short_tmpdir,
)

pytestmark = pytest.mark.integration
Mode = csi_pb2.VolumeCapability.AccessMode
KUBECONFIG = DEV_STATE / "kube" / "kubeconfig"


def capability(mode: int = Mode.MULTI_NODE_MULTI_WRITER, flags: tuple[str, ...] = ()) -> csi_pb2.VolumeCapability:
    return csi_pb2.VolumeCapability(
        mount=csi_pb2.VolumeCapability.MountVolume(mount_flags=list(flags)),
        access_mode=csi_pb2.VolumeCapability.AccessMode(mode=mode),  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def gluster() -> GlusterNodes:
    return GlusterNodes.load()


@pytest.fixture(scope="module")
async def volume(gluster: GlusterNodes) -> AsyncIterator[GlusterVolume]:
    made = await gluster.create_volume()
    try:
        yield made
    finally:
        await gluster.delete_volume(made)


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    path = short_tmpdir("csi-it-")
    yield path
    remove_tree(path)


@pytest.fixture(scope="module")
async def driver(root: Path) -> AsyncIterator[Driver]:
    process = Driver(root, args=["--node-id", "it-node", "--zone", "zone-a"])
    process.start()
    try:
        await process.wait_ready()
        yield process
    finally:
        code = process.stop()
        print(f"\n--- driver exited {code}; last lines ---\n{process.tail(40)}")
        assert code == 0, "the driver stops cleanly on SIGTERM"
        assert not process.socket.exists() and not process.registration_socket.exists()


class Kubelet:
    """What kubelet does around the driver: directories, then the CSI calls with its paths."""

    def __init__(self, driver: Driver, channel: grpc.aio.Channel) -> None:
        self.driver = driver
        self.node = csi_pb2_grpc.NodeStub(channel)
        self.identity = csi_pb2_grpc.IdentityStub(channel)

    def staging(self, volume: GlusterVolume) -> Path:
        return (
            self.driver.kubelet_root
            / "plugins/kubernetes.io/csi/glusterfs.gluster.org"
            / volume.volume_id[:12]
            / "globalmount"
        )

    def target(self, pod: str) -> Path:
        path = self.driver.kubelet_root / "pods" / pod / "volumes/kubernetes.io~csi/pvc-it"
        path.mkdir(parents=True, exist_ok=True)
        return path / "mount"

    async def stage(self, volume: GlusterVolume, **context: str) -> Path:
        staging = self.staging(volume)
        staging.parent.mkdir(parents=True, exist_ok=True)  # kubelet makes the parent; the driver globalmount
        await self.node.NodeStageVolume(
            csi_pb2.NodeStageVolumeRequest(
                volume_id=volume.volume_id,
                staging_target_path=str(staging),
                volume_capability=capability(),
                volume_context=context or volume.context,
            )
        )
        return staging

    async def publish(self, volume: GlusterVolume, pod: str, *, readonly: bool = False) -> Path:
        target = self.target(pod)
        await self.node.NodePublishVolume(
            csi_pb2.NodePublishVolumeRequest(
                volume_id=volume.volume_id,
                staging_target_path=str(self.staging(volume)),
                target_path=str(target),
                volume_capability=capability(),
                readonly=readonly,
                volume_context={
                    **volume.context,
                    "csi.storage.k8s.io/pod.name": pod,
                    "csi.storage.k8s.io/pod.namespace": "it",
                },
            )
        )
        return target

    async def unpublish(self, volume: GlusterVolume, target: Path) -> None:
        await self.node.NodeUnpublishVolume(
            csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume.volume_id, target_path=str(target))
        )

    async def unstage(self, volume: GlusterVolume) -> None:
        await self.node.NodeUnstageVolume(
            csi_pb2.NodeUnstageVolumeRequest(volume_id=volume.volume_id, staging_target_path=str(self.staging(volume)))
        )


@pytest.fixture
async def kubelet(driver: Driver) -> AsyncIterator[Kubelet]:
    async with driver.channel() as channel:
        yield Kubelet(driver, channel)


async def metrics(driver: Driver) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{driver.port}/metrics") as r:
        text = await r.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def sample(values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


def gluster_mounts(root: Path, path: Path) -> list[str]:
    return [e.source for e in mounts_under(root) if e.mount_point == str(path) and e.is_gluster]


def client_cmdline(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")


async def kill_client(pid: int, mount_point: Path) -> None:
    """SIGKILL a glusterfs client the driver started, and wait until its mount answers ENOTCONN."""
    os.kill(pid, 9)
    deadline = time.monotonic() + 10
    while True:
        try:
            await asyncio.to_thread(mount_point.stat)
        except OSError as e:
            assert e.errno == errno.ENOTCONN, e
            return
        assert time.monotonic() < deadline, "the mount did not go stale"
        await asyncio.sleep(0.05)


async def test_kubelet_registers_the_driver_through_its_registration_socket(driver: Driver) -> None:
    async with driver.channel(driver.registration_socket) as channel:
        registration = pluginregistration_pb2_grpc.RegistrationStub(channel)
        info = await registration.GetInfo(pluginregistration_pb2.InfoRequest())
        assert (info.type, info.name, list(info.supported_versions)) == (
            "CSIPlugin",
            "glusterfs.gluster.org",
            ["1.0.0"],
        )
        async with driver.channel(Path(info.endpoint)) as csi:
            node_info = await csi_pb2_grpc.NodeStub(csi).NodeGetInfo(csi_pb2.NodeGetInfoRequest())
        assert node_info.node_id == "it-node"
        assert dict(node_info.accessible_topology.segments) == {"topology.glusterfs.gluster.org/zone": "zone-a"}
        await registration.NotifyRegistrationStatus(pluginregistration_pb2.RegistrationStatus(plugin_registered=True))
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{driver.port}/healthz") as r:
        assert r.status == 200, await r.text()


async def test_a_volume_through_its_whole_life_on_a_node(
    kubelet: Kubelet, driver: Driver, gluster: GlusterNodes, volume: GlusterVolume, root: Path
) -> None:
    # NodeStage: one FUSE mount of the volume, with the other servers as backups.
    started = time.perf_counter()
    staging = await kubelet.stage(volume)
    stage_seconds = time.perf_counter() - started
    assert gluster_mounts(root, staging) == [f"{volume.servers[0]}:/{volume.name}"]
    [client] = client_pids(staging)
    cmdline = client_cmdline(client)
    assert [a for a in cmdline if a.startswith(b"--volfile-server=")] == [
        f"--volfile-server={server}".encode() for server in volume.servers
    ], "servers[1:] became backup-volfile-servers"
    await kubelet.stage(volume)
    assert len(gluster_mounts(root, staging)) == 1, "staging twice mounts once"

    # NodePublish: a bind mount; a file written through it lands on all three bricks.
    target = await kubelet.publish(volume, "pod-a")
    await kubelet.publish(volume, "pod-a")
    payload = f"written through {target}\n"
    (target / "hello.txt").write_text(payload)
    assert await gluster.read_brick_file(volume, "hello.txt") == [payload] * 3

    # A read-only publish refuses writes and still reads.
    readonly = await kubelet.publish(volume, "pod-ro", readonly=True)
    assert (readonly / "hello.txt").read_text() == payload
    with pytest.raises(OSError) as refused:
        (readonly / "nope.txt").write_text("x")
    assert refused.value.errno == errno.EROFS
    assert (target / "hello.txt").read_text() == payload, "the read-write bind is unaffected"

    # Stats feed kubelet_volume_stats_*: bytes and inodes of the real volume.
    stats = await kubelet.node.NodeGetVolumeStats(
        csi_pb2.NodeGetVolumeStatsRequest(volume_id=volume.volume_id, volume_path=str(target))
    )
    usage = {u.unit: u for u in stats.usage}
    for unit in (csi_pb2.VolumeUsage.BYTES, csi_pb2.VolumeUsage.INODES):
        assert usage[unit].total > 0 and usage[unit].used > 0 and 0 < usage[unit].available <= usage[unit].total
    expanded = await kubelet.node.NodeExpandVolume(
        csi_pb2.NodeExpandVolumeRequest(volume_id=volume.volume_id, volume_path=str(target))
    )
    assert expanded.capacity_bytes == usage[csi_pb2.VolumeUsage.BYTES].total
    health = await kubelet.node.NodeGetVolumeHealth(csi_pb2.NodeGetVolumeHealthRequest(volume_id=volume.volume_id))
    assert list(health.volume_health.health_statuses) == []

    # The glusterfs client dies: every mount of it answers ENOTCONN ...
    await kill_client(client, staging)
    sick = await kubelet.node.NodeGetVolumeHealth(
        csi_pb2.NodeGetVolumeHealthRequest(volume_id=volume.volume_id, volume_publish_path=str(target))
    )
    assert [e.reason for e in sick.volume_health.health_statuses] == ["StaleMount", "StaleMount"]
    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await kubelet.node.NodeGetVolumeStats(
            csi_pb2.NodeGetVolumeStatsRequest(volume_id=volume.volume_id, volume_path=str(target))
        )
    assert stale.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "Transport endpoint is not connected" in (stale.value.details() or "")

    # ... and the next NodePublish (a new pod) mounts the volume again under the staging path.
    newcomer = await kubelet.publish(volume, "pod-b")
    assert (newcomer / "hello.txt").read_text() == payload
    [new_client] = client_pids(staging)
    assert new_client != client
    assert len(gluster_mounts(root, staging)) == 1, "the dead mount was detached, not stacked under"
    # The old pod's bind still points at the dead client; republishing it replaces it.
    with pytest.raises(OSError):
        (target / "hello.txt").read_text()
    await kubelet.publish(volume, "pod-a")
    assert (target / "hello.txt").read_text() == payload

    # Unpublish and unstage, twice each: nothing stays mounted, the targets are gone.
    for path in (target, readonly, newcomer):
        for _ in range(2):
            await kubelet.unpublish(volume, path)
        assert not path.exists()
    # A stale staging mount found by NodeStage is remounted too.
    await kill_client(new_client, staging)
    await kubelet.stage(volume)
    assert (staging / "hello.txt").read_text() == payload
    for _ in range(2):
        await kubelet.unstage(volume)
    assert mounts_under(root) == []
    assert staging.is_dir(), "kubelet's staging directory is kubelet's to remove"

    values = await metrics(driver)
    assert sample(values, "provisioner_csi_stale_mounts_repaired_total") >= 3
    mounts = sample(values, "provisioner_csi_operation_seconds_count", operation="NodeStageVolume", step="mount")
    seconds = sample(values, "provisioner_csi_operation_seconds_sum", operation="NodeStageVolume", step="mount")
    remounts = sample(values, "provisioner_csi_operation_seconds_count", operation="NodePublishVolume", step="mount")
    binds = sample(values, "provisioner_csi_operation_seconds_count", operation="NodePublishVolume", step="bind")
    bind_seconds = sample(values, "provisioner_csi_operation_seconds_sum", operation="NodePublishVolume", step="bind")
    assert mounts == 2 and remounts == 1 and binds == 4
    assert sample(values, "provisioner_csi_operations_total", operation="NodePublishVolume", code="OK") == 5
    print(
        f"\nNodeStageVolume (first, as kubelet sees it): {stage_seconds * 1000:.0f} ms; "
        f"FUSE mount step: {seconds / mounts * 1000:.0f} ms mean over {mounts:.0f}; "
        f"bind step: {bind_seconds / binds * 1000:.1f} ms mean over {binds:.0f}"
    )


async def test_hostile_requests_are_refused_before_anything_is_mounted(
    kubelet: Kubelet, volume: GlusterVolume, root: Path
) -> None:
    staging = kubelet.staging(volume)
    cases = [
        ({**volume.context, "servers": f"-oremount,{volume.servers[0]}"}, (), "volume_context[servers]"),
        (volume.context, ("log-file=/etc/passwd",), "volume_capability.mount.mount_flags"),
        (volume.context, ("acl,xlator-option=*.x=y",), "volume_capability.mount.mount_flags"),
    ]
    for context, flags, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await kubelet.node.NodeStageVolume(
                csi_pb2.NodeStageVolumeRequest(
                    volume_id=volume.volume_id,
                    staging_target_path=str(staging),
                    volume_capability=capability(flags=flags),
                    volume_context=context,
                )
            )
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert (refused.value.details() or "").startswith(field)
    with pytest.raises(grpc.aio.AioRpcError) as foreign:
        await kubelet.node.NodeStageVolume(
            csi_pb2.NodeStageVolumeRequest(
                volume_id=volume.volume_id,
                staging_target_path="/tmp",
                volume_capability=capability(),
                volume_context=volume.context,
            )
        )
    assert foreign.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (foreign.value.details() or "").startswith("staging_target_path: '/tmp' is outside")
    assert mounts_under(root) == []


@pytest.fixture
async def claim(gluster: GlusterNodes) -> AsyncIterator[tuple[str, str, str]]:
    """A PV of this driver bound to a claim in a namespace of its own, on the dev control plane."""
    if not KUBECONFIG.is_file():
        pytest.fail(f"the dev stack's Kubernetes control plane is not up: {KUBECONFIG} is missing")
    volume_id = uuid.uuid4().hex
    suffix = volume_id[:8]
    namespace, name, pv = f"csi-it-{suffix}", "data", f"csi-it-{suffix}"
    api = await config.new_client_from_config(config_file=str(KUBECONFIG), persist_config=False)
    core = client.CoreV1Api(api)
    try:
        await core.create_namespace({"metadata": {"name": namespace}})  # type: ignore[arg-type]
        created = await core.create_namespaced_persistent_volume_claim(
            namespace,
            {  # type: ignore[arg-type]
                "metadata": {"name": name},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "resources": {"requests": {"storage": "1Gi"}},
                    "storageClassName": "",
                    "volumeName": pv,
                },
            },
        )
        await core.create_persistent_volume(
            {  # type: ignore[arg-type]
                "metadata": {"name": pv},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteMany"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": "",
                    "claimRef": {"namespace": namespace, "name": name, "uid": created.metadata.uid},
                    "csi": {
                        "driver": "glusterfs.gluster.org",
                        "volumeHandle": volume_id,
                        "volumeAttributes": {"volume": f"csi_gone_{suffix}", "servers": ",".join(gluster.ips)},
                    },
                },
            }
        )
        yield namespace, name, volume_id
    finally:
        await core.delete_persistent_volume(pv)
        await core.delete_namespace(namespace)
        await api.close()


async def test_a_failed_mount_posts_an_event_on_the_claim_naming_the_server(
    claim: tuple[str, str, str], gluster: GlusterNodes
) -> None:
    namespace, name, volume_id = claim
    root = short_tmpdir("csi-ev-")
    driver = Driver(root, args=["--node-id", "it-node", "--kubernetes-events", "--kubeconfig", str(KUBECONFIG)])
    driver.start()
    try:
        await driver.wait_ready()
        async with driver.channel() as channel:
            kubelet = Kubelet(driver, channel)
            missing = GlusterVolume(name=f"csi_gone_{volume_id[:8]}", volume_id=volume_id, servers=tuple(gluster.ips))
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await kubelet.stage(missing)
        assert failed.value.code() is grpc.StatusCode.INTERNAL
        details = failed.value.details() or ""
        assert "[VolumeNotFound]" in details and f"storage server {gluster.ips[0]}" in details
        values = await metrics(driver)
        assert sample(values, "provisioner_csi_mount_failures_total", reason="VolumeNotFound") == 1
        api = await config.new_client_from_config(config_file=str(KUBECONFIG), persist_config=False)
        try:
            events = await client.CoreV1Api(api).list_namespaced_event(namespace)
        finally:
            await api.close()
        [event] = [e for e in events.items if e.reason == "MountFailed"]
        assert (event.type, event.involved_object.kind, event.involved_object.name) == (
            "Warning",
            "PersistentVolumeClaim",
            name,
        )
        assert f"storage server {gluster.ips[0]} answered that it has no such volume" in event.message
        assert event.source.host == "it-node"
        assert mounts_under(root) == []
    finally:
        assert driver.stop() == 0, driver.tail()
        remove_tree(root)
