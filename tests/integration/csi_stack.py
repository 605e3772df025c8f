"""The real parts the CSI driver's integration tests use: gluster nodes over SSH, the driver as a process.

The gluster nodes are the dev stack's (``deploy/dev/gluster.sh``; ``$DEV_STATE/gluster/env``). This
module never starts or stops the stack: when the nodes do not answer, the test fails saying so.
Volumes made here are replica 3 over plain brick directories ``/srv/csi/<volume>/brick`` on each node
(``force``: they sit on the nodes' root file system), carry ``user.provisioner.id`` like the daemon's
volumes, and are removed again, bricks included.

The driver runs as ``python -m provisioner.csi`` in a child process with a kubelet root of its own
under ``/tmp`` (short: unix socket paths are limited to 107 bytes).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from devstack.stack import die_with_parent, read_env
from provisioner.csi import mountinfo
from provisioner.csi.attributes import volume_attributes
from provisioner.csi.mountinfo import MountEntry
from provisioner.csi.proto import csi_pb2, csi_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
DEV_STATE = Path(os.environ.get("DEV_STATE", REPO / ".dev"))
BRICK_ROOT = "/srv/csi"
SSH_FAILED = 255  # ssh's own exit status when it could not connect or authenticate


class SshUnreachable(RuntimeError):
    """ssh could not reach the node (its sshd is down, for instance)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class GlusterVolume:
    name: str
    volume_id: str
    servers: tuple[str, ...]

    @property
    def brick(self) -> str:
        return f"{BRICK_ROOT}/{self.name}/brick"

    @property
    def context(self) -> dict[str, str]:
        return volume_attributes(self.name, self.servers)


@dataclass
class GlusterNodes:
    ips: list[str]
    ssh_config: Path

    @classmethod
    def load(cls) -> GlusterNodes:
        env_file = DEV_STATE / "gluster" / "env"
        if not env_file.is_file():
            pytest.fail(
                f"the dev stack's gluster nodes are not up: {env_file} is missing "
                "(start them with deploy/dev/stack up, or DEV_STATE=... deploy/dev/gluster.sh up)"
            )
        env = read_env(env_file)
        nodes = cls(ips=env["GLUSTER_NODES"].split(","), ssh_config=Path(env["GLUSTER_SSH_CONFIG"]))
        probe = subprocess.run(
            ["ssh", "-F", str(nodes.ssh_config), nodes.ips[0], "gluster", "--mode=script", "pool", "list"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        connected = probe.stdout.count("Connected")
        if probe.returncode != 0 or connected < len(nodes.ips):
            pytest.fail(f"the gluster nodes do not answer as a pool of {len(nodes.ips)}: {probe.stdout}{probe.stderr}")
        return nodes

    async def run(self, ip: str, *argv: str, timeout: float = 120.0, check: bool = True) -> str:
        # ssh hands the command to the node's shell: every word is quoted, none comes from outside the test.
        process = await asyncio.create_subprocess_exec(
            "ssh",
            "-F",
            str(self.ssh_config),
            ip,
            shlex.join(argv),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
        if process.returncode == SSH_FAILED:
            raise SshUnreachable(f"ssh to {ip} failed: {err.decode().strip()}")
        if check and process.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} on {ip} exited {process.returncode}: {err.decode()}{out.decode()}")
        return out.decode()

    async def gluster(self, *argv: str, check: bool = True) -> str:
        """The gluster CLI on the first node whose sshd answers (other tests take nodes down at times)."""
        for ip in self.ips[:-1]:
            try:
                return await self.run(ip, "gluster", "--mode=script", *argv, check=check)
            except SshUnreachable:
                continue
        return await self.run(self.ips[-1], "gluster", "--mode=script", *argv, check=check)

    async def create_volume(self, name: str | None = None) -> GlusterVolume:
        volume = GlusterVolume(
            name=name or f"csi_{uuid.uuid4().hex[:10]}", volume_id=uuid.uuid4().hex, servers=tuple(self.ips)
        )
        try:
            await asyncio.gather(*(self.run(ip, "mkdir", "-p", volume.brick) for ip in self.ips))
            bricks = [f"{ip}:{volume.brick}" for ip in self.ips]
            await self.gluster("volume", "create", volume.name, "replica", str(len(self.ips)), *bricks, "force")
            await self.gluster("volume", "set", volume.name, "user.provisioner.id", volume.volume_id)
            await self.gluster("volume", "start", volume.name)
        except BaseException:
            await self.delete_volume(volume, check=False)  # half-made: leave no brick directory behind
            raise
        return volume

    async def delete_volume(self, volume: GlusterVolume, *, check: bool = True) -> None:
        await self.gluster("volume", "stop", volume.name, "force", check=False)
        await self.gluster("volume", "delete", volume.name, check=False)
        await asyncio.gather(
            *(self.run(ip, "rm", "-rf", f"{BRICK_ROOT}/{volume.name}", check=check) for ip in self.ips),
            return_exceptions=not check,
        )

    async def read_brick_file(self, volume: GlusterVolume, relative: str) -> list[str]:
        """The file as each node's brick holds it (replica 3: all three)."""
        return list(await asyncio.gather(*(self.run(ip, "cat", f"{volume.brick}/{relative}") for ip in self.ips)))


def short_tmpdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def mounts_under(root: Path) -> list[MountEntry]:
    return list(mountinfo.read().under([root]))


def unmount_everything_under(root: Path) -> list[str]:
    """Test cleanup after a failure: lazily unmount whatever is still mounted below ``root``."""
    left = [e.mount_point for e in reversed(mountinfo.read().under([root]))]
    for path in left:
        subprocess.run(["umount", "-n", "-l", "--", path], capture_output=True, check=False)
    return left


def client_pids(mount_point: Path) -> list[int]:
    """PIDs of the glusterfs client processes serving the FUSE mount at ``mount_point``.

    The client's command line ends with its mount point (``glusterfs ... --volfile-id=/vol <path>``).
    """
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv if a]
        if words and words[0].endswith("glusterfs") and words[-1] == str(mount_point):
            pids.append(int(proc.name))
    return pids


@dataclass
class Driver:
    """``python -m provisioner.csi`` in a child process, with a kubelet root of its own."""

    root: Path
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    @property
    def socket(self) -> Path:
        return self.kubelet_root / "plugins" / "glusterfs.gluster.org" / "csi.sock"

    @property
    def registration_socket(self) -> Path:
        return self.kubelet_root / "plugins_registry" / "glusterfs.gluster.org-reg.sock"

    @property
    def log(self) -> Path:
        return self.root / "driver.log"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
        env.update(self.env)
        argv = [
            sys.executable,
            "-m",
            "provisioner.csi",
            "--kubelet-root",
            str(self.kubelet_root),
            "--http-host",
            "127.0.0.1",
            "--http-port",
            str(self.port),
            *self.args,
        ]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
            )

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"the driver exited with {self.process.returncode}:\n{self.tail()}")
            if self.socket.exists():
                try:
                    async with self.channel() as channel:
                        probe = await csi_pb2_grpc.IdentityStub(channel).Probe(csi_pb2.ProbeRequest(), timeout=2)
                    if probe.ready.value:
                        return
                except grpc.aio.AioRpcError:
                    pass
            await asyncio.sleep(0.1)
        raise RuntimeError(f"the driver did not answer Probe within {timeout}s:\n{self.tail()}")

    def channel(self, path: Path | None = None) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(f"unix://{path or self.socket}")

    def stop(self, timeout: float = 20.0) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def tail(self, lines: int = 80) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def remove_tree(root: Path) -> None:
    left = unmount_everything_under(root)
    shutil.rmtree(root, ignore_errors=True)
    if left:
        raise AssertionError(f"mounts were left under {root}: {left}")
