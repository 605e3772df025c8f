"""The asyncssh executor against the real sandbox nodes' sshd."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from devstack.stack import Stack
from provisioner.errors import CommandFailed, CommandTimeout, HostKeyRejected, NodeUnreachable
from provisioner.executor.ssh import SshExecutor, SshOptions

pytestmark = pytest.mark.integration


def executor(stack: Stack, known_hosts: Path | None = None) -> SshExecutor:
    return SshExecutor(
        SshOptions(
            user="root",
            client_key=Path(stack.gluster["GLUSTER_SSH_KEY"]),
            known_hosts=known_hosts or Path(stack.gluster["GLUSTER_KNOWN_HOSTS"]),
            connect_timeout=5,
        )
    )


async def test_runs_on_every_node_as_that_node(stack: Stack) -> None:
    ssh = executor(stack)
    try:
        names = [(await ssh.run(node, ("hostname",), timeout=10)).stdout.strip() for node in stack.nodes]
    finally:
        await ssh.close()
    assert names == ["node1", "node2", "node3"]


async def test_arguments_reach_the_node_literally(stack: Stack) -> None:
    hostile = "a; touch /tmp/pwned $(id) `id` 'q' \"dq\" \\ *"
    ssh = executor(stack)
    try:
        result = await ssh.run(stack.nodes[0], ("printf", "%s", hostile), timeout=10)
        pwned = await ssh.run(stack.nodes[0], ("test", "-e", "/tmp/pwned"), timeout=10, check=False)
    finally:
        await ssh.close()
    assert result.stdout == hostile
    assert pwned.exit_status != 0


async def test_unknown_host_key_is_refused_and_nothing_runs(stack: Stack, tmp_path: Path) -> None:
    impostor = tmp_path / "impostor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)], check=True)
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{stack.nodes[0]} {impostor.with_suffix('.pub').read_text()}")
    marker = f"/tmp/should-not-exist-{uuid.uuid4().hex}"
    ssh = executor(stack, known_hosts=wrong)
    try:
        with pytest.raises(HostKeyRejected) as refused:
            await ssh.run(stack.nodes[0], ("touch", marker), timeout=10)
    finally:
        await ssh.close()
    assert stack.nodes[0] in str(refused.value)
    assert refused.value.reason == "HostKeyRejected"
    honest = executor(stack)
    try:
        check = await honest.run(stack.nodes[0], ("test", "-e", marker), timeout=10, check=False)
    finally:
        await honest.close()
    assert check.exit_status == 1


async def test_timeout_and_failure_are_reported_and_the_connection_survives(stack: Stack) -> None:
    ssh = executor(stack)
    try:
        with pytest.raises(CommandTimeout):
            await ssh.run(stack.nodes[1], ("sleep", "5"), timeout=0.5)
        with pytest.raises(CommandFailed) as failed:
            await ssh.run(stack.nodes[1], ("ls", "/no/such/dir"), timeout=10)
        assert failed.value.exit_status == 2
        assert "No such file" in failed.value.stderr
        assert (await ssh.run(stack.nodes[1], ("true",), timeout=10)).ok
    finally:
        await ssh.close()


async def test_a_broken_connection_is_unreachable_once_then_reopened(stack: Stack) -> None:
    """No retry inside the transport (the request's retry owner decides): the command that meets
    the dead connection fails as NodeUnreachable, and the next one opens a new connection."""
    ssh = executor(stack)
    try:
        await ssh.run(stack.nodes[2], ("true",), timeout=10)
        for connection in ssh._connections.values():
            connection.abort()  # the node went away under us
        with pytest.raises(NodeUnreachable):
            await ssh.run(stack.nodes[2], ("echo", "lost"), timeout=10)
        assert (await ssh.run(stack.nodes[2], ("echo", "back"), timeout=10)).stdout == "back\n"
    finally:
        await ssh.close()
