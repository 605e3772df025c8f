"""The SSH executor against an in-process asyncssh server on 127.0.0.1:0 (as asyncssh tests itself):
host keys verified, arguments literal, exit codes, timeouts that stop the remote command, bounded
output, and a dead connection reported as NodeUnreachable and reopened by the next command."""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh
import pytest
import pytest_asyncio

from provisioner.errors import CommandFailed, CommandTimeout, HostKeyRejected, NodeUnreachable
from provisioner.executor.ssh import SshExecutor, SshOptions


@dataclass
class Node:
    """What the fake node saw: commands, signals, and channels closed under a running command."""

    port: int = 0
    commands: list[list[str]] = field(default_factory=list)
    signals: list[str] = field(default_factory=list)
    server: asyncssh.SSHAcceptor | None = None
    connections: list[asyncssh.SSHServerConnection] = field(default_factory=list)

    async def handle(self, process: asyncssh.SSHServerProcess[str]) -> None:
        words = shlex.split(process.command or "")
        self.commands.append(words)
        match words:
            case ["printf", "%s", text]:
                process.stdout.write(text)
                process.exit(0)
            case ["fail", code]:
                process.stderr.write("it broke\n")
                process.exit(int(code))
            case ["flood", size]:
                process.stdout.write("x" * int(size))
                process.exit(0)
            case ["hang"]:
                try:
                    await process.stdin.read()
                except asyncssh.SignalReceived as received:
                    self.signals.append(received.signal)
                process.exit(137)
            case ["drop"]:
                process.channel.get_connection().abort()
            case _:
                process.exit(127)


class Server(asyncssh.SSHServer):
    def __init__(self, node: Node) -> None:
        self._node = node

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._node.connections.append(conn)


@dataclass
class Keys:
    client: Path
    known_hosts: Path
    wrong_known_hosts: Path


@pytest_asyncio.fixture
async def node(tmp_path: Path) -> AsyncIterator[tuple[Node, Keys]]:
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    impostor = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    client = tmp_path / "id_ed25519"
    client_key.write_private_key(client)
    authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())
    fake = Node()
    fake.server = await asyncssh.create_server(
        lambda: Server(fake),
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        authorized_client_keys=authorized,
        process_factory=fake.handle,
    )
    fake.port = fake.server.sockets[0].getsockname()[1]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{fake.port} {host_key.export_public_key().decode()}")
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(f"[127.0.0.1]:{fake.port} {impostor.export_public_key().decode()}")
    try:
        yield fake, Keys(client, known, wrong)
    finally:
        fake.server.close()
        await fake.server.wait_closed()


def executor(node: Node, keys: Keys, *, known_hosts: Path | None = None, max_output: int = 1 << 20) -> SshExecutor:
    return SshExecutor(
        SshOptions(
            user="root",
            client_key=keys.client,
            known_hosts=known_hosts or keys.known_hosts,
            port=node.port,
            connect_timeout=5,
            max_output=max_output,
        )
    )


async def test_arguments_arrive_as_single_literal_words(node: tuple[Node, Keys]) -> None:
    fake, keys = node
    ssh = executor(fake, keys)
    hostile = "a; touch /tmp/pwned $(id) `id` 'q' \"dq\" \\ * --remote-host=x"
    try:
        result = await ssh.run("127.0.0.1", ("printf", "%s", hostile), timeout=5)
    finally:
        await ssh.close()
    assert result.stdout == hostile and result.exit_status == 0
    assert fake.commands == [["printf", "%s", hostile]]


async def test_a_failing_command_raises_with_its_status_and_stderr(node: tuple[Node, Keys]) -> None:
    fake, keys = node
    ssh = executor(fake, keys)
    try:
        with pytest.raises(CommandFailed) as failed:
            await ssh.run("127.0.0.1", ("fail", "3"), timeout=5)
        unchecked = await ssh.run("127.0.0.1", ("fail", "4"), timeout=5, check=False)
    finally:
        await ssh.close()
    assert failed.value.exit_status == 3 and "it broke" in failed.value.stderr
    assert unchecked.exit_status == 4


async def test_a_wrong_host_key_is_refused_before_anything_runs(node: tuple[Node, Keys]) -> None:
    fake, keys = node
    ssh = executor(fake, keys, known_hosts=keys.wrong_known_hosts)
    try:
        with pytest.raises(HostKeyRejected):
            await ssh.run("127.0.0.1", ("printf", "%s", "x"), timeout=5)
    finally:
        await ssh.close()
    assert fake.commands == []


async def test_a_timeout_stops_the_remote_command(node: tuple[Node, Keys]) -> None:
    fake, keys = node
    ssh = executor(fake, keys)
    try:
        with pytest.raises(CommandTimeout):
            await ssh.run("127.0.0.1", ("hang",), timeout=0.5)
        for _ in range(50):
            if fake.signals:
                break
            await asyncio.sleep(0.05)
        after = await ssh.run("127.0.0.1", ("printf", "%s", "still here"), timeout=5)
    finally:
        await ssh.close()
    assert fake.signals == ["KILL"], "the remote command was left running"
    assert after.stdout == "still here"


async def test_output_is_bounded(node: tuple[Node, Keys]) -> None:
    fake, keys = node
    ssh = executor(fake, keys, max_output=1000)
    try:
        result = await ssh.run("127.0.0.1", ("flood", "300000"), timeout=10)
    finally:
        await ssh.close()
    assert result.stdout.startswith("x" * 1000)
    assert result.stdout.endswith("[299000 more bytes of output dropped]")
    assert len(result.stdout) < 1100


async def test_a_dead_connection_is_unreachable_and_the_next_command_reconnects(node: tuple[Node, Keys]) -> None:
    fake, keys = node
    ssh = executor(fake, keys)
    try:
        await ssh.run("127.0.0.1", ("printf", "%s", "one"), timeout=5)
        with pytest.raises(NodeUnreachable):
            await ssh.run("127.0.0.1", ("drop",), timeout=5)
        again = await ssh.run("127.0.0.1", ("printf", "%s", "two"), timeout=5)
    finally:
        await ssh.close()
    assert again.stdout == "two"
    assert len(fake.connections) == 2, "no new connection after the old one died"


async def test_an_unreachable_host_is_node_unreachable(node: tuple[Node, Keys]) -> None:
    fake, keys = node
    ssh = executor(fake, keys)
    assert fake.server is not None
    fake.server.close()
    await fake.server.wait_closed()
    try:
        with pytest.raises(NodeUnreachable, match=r"127\.0\.0\.1"):
            await ssh.run("127.0.0.1", ("printf", "%s", "x"), timeout=5)
    finally:
        await ssh.close()
