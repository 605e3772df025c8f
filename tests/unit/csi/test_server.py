"""``run(settings)``: sockets where kubelet looks, registration last, /healthz and /metrics, clean stop."""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import grpc
import pytest

from provisioner.csi import __main__ as entry
from provisioner.csi.proto import csi_pb2, csi_pb2_grpc, pluginregistration_pb2, pluginregistration_pb2_grpc
from provisioner.csi.server import run
from provisioner.csi.settings import CsiSettings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for(path: Path, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await asyncio.to_thread(path.exists):  # noqa: ASYNC110 -- polling a file the driver makes
            await asyncio.sleep(0.02)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """pytest's tmp_path is too long for a unix socket path (107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="csi-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_run_serves_registers_and_stops(short_tmp: Path) -> None:
    tmp_path = short_tmp
    port = free_port()
    settings = CsiSettings(kubelet_root=tmp_path / "kubelet", node_id="node-a", http_port=port, http_host="127.0.0.1")
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, stop=stop))
    registration = tmp_path / "kubelet/plugins_registry/glusterfs.gluster.org-reg.sock"
    csi = tmp_path / "kubelet/plugins/glusterfs.gluster.org/csi.sock"
    await wait_for(registration)
    assert csi.exists(), "the CSI socket answers before kubelet can see the registration socket"
    async with grpc.aio.insecure_channel(f"unix://{registration}") as channel:
        info = await pluginregistration_pb2_grpc.RegistrationStub(channel).GetInfo(pluginregistration_pb2.InfoRequest())
    assert info.endpoint == str(csi) and info.name == "glusterfs.gluster.org"
    async with grpc.aio.insecure_channel(f"unix://{info.endpoint}") as channel:
        node = await csi_pb2_grpc.NodeStub(channel).NodeGetInfo(csi_pb2.NodeGetInfoRequest())
    assert node.node_id == "node-a" and not node.HasField("accessible_topology")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
            body = await response.text()
            assert response.status == 200, body
        async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
            metrics = await response.text()
    assert 'provisioner_csi_operations_total{code="OK",operation="NodeGetInfo"}' in metrics
    assert 'provisioner_csi_mount_failures_total{reason="ServerUnreachable"}' in metrics
    assert (tmp_path / "kubelet/plugins/glusterfs.gluster.org/volumes").is_dir()
    stop.set()
    await asyncio.wait_for(task, 15)
    assert not registration.exists() and not csi.exists()


async def test_a_stale_socket_is_replaced_and_a_file_is_not(short_tmp: Path) -> None:
    tmp_path = short_tmp
    csi = tmp_path / "csi.sock"
    old = socket.socket(socket.AF_UNIX)
    old.bind(str(csi))
    old.close()
    settings = CsiSettings(kubelet_root=tmp_path, endpoint=f"unix://{csi}", registration=False, node_id="n")
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, stop=stop))
    async with asyncio.timeout(10):
        while True:
            try:
                async with grpc.aio.insecure_channel(f"unix://{csi}") as channel:
                    await csi_pb2_grpc.IdentityStub(channel).Probe(csi_pb2.ProbeRequest(), timeout=1)
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.05)
    stop.set()
    await task
    blocker = tmp_path / "file.sock"
    blocker.write_text("not a socket")
    settings = CsiSettings(kubelet_root=tmp_path, endpoint=str(blocker), registration=False, node_id="n")
    with pytest.raises(Exception, match="not a socket"):
        await run(settings, stop=asyncio.Event())
    assert blocker.read_text() == "not a socket"


def test_settings_defaults_and_derived_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVISIONER_CSI__NODE_ID", "worker-1")
    monkeypatch.setenv("PROVISIONER_CSI__ALLOWED_PATH_ROOTS", '["/tmp/sanity"]')
    settings = CsiSettings()
    assert settings.driver_name == "glusterfs.gluster.org"
    assert settings.socket_path == Path("/var/lib/kubelet/plugins/glusterfs.gluster.org/csi.sock")
    assert settings.registration_path == Path("/var/lib/kubelet/plugins_registry/glusterfs.gluster.org-reg.sock")
    assert settings.state_path == Path("/var/lib/kubelet/plugins/glusterfs.gluster.org/volumes")
    assert settings.path_roots == (Path("/tmp/sanity"),)
    assert settings.topology_key == "topology.glusterfs.gluster.org/zone"
    assert settings.node_id == "worker-1"


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("DRIVER_NAME", "gluster.org/glusterfs"),
        ("DRIVER_NAME", "x" * 64),
        ("ALLOWED_PATH_ROOTS", '["relative"]'),
        ("ALLOWED_PATH_ROOTS", '["/"]'),
        ("STATE_DIR", "/var/lib/with space"),
        ("CLIENT_LOG_LEVEL", "LOUD"),
        ("HTTP_PORT", "70000"),
        ("KUBELET_ROOT", "/" + "k" * 100),
    ],
)
def test_bad_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: str, value: str
) -> None:
    monkeypatch.setenv(f"PROVISIONER_CSI__{env}", value)
    assert entry.main([]) == 2
    assert capsys.readouterr().err.startswith("PROVISIONER_CSI__")


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVISIONER_CSI__NODE_ID", "from-env")
    settings = entry.settings_from(
        ["--node-id", "from-flag", "--endpoint", "unix:///tmp/x/csi.sock", "--no-registration", "--zone", "z2"]
    )
    assert settings.node_id == "from-flag" and settings.socket_path == Path("/tmp/x/csi.sock")
    assert settings.registration is False and settings.zone == "z2"
