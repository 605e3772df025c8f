"""Runs node commands over SSH with asyncssh: pooled connections, verified host keys, bounded work.

* One persistent connection per host, opened on first use and reopened on the next command after
  it breaks. Nothing here retries: a broken connection is ``NodeUnreachable``, and the request's
  one retry owner (``handling.retry``) decides whether to try again.
* Host keys are checked against the configured known_hosts file; there is no auto-accept. A host
  whose key is missing or different is refused and nothing runs there.
* At most ``max_sessions`` commands run at once on a host (sshd's MaxSessions defaults to 10).
* A command that outlives its timeout is signalled and its channel closed, so nothing keeps
  running on the node for a request that has given up on it.
* Output is bounded: at most ``max_output`` bytes of stdout and of stderr are kept (the rest is
  read and dropped, so the node never blocks on a full pipe), and the result says it was cut.
* The argv is joined with ``shlex.join`` here, once: SSH carries a command string, and quoting it
  in this one place is what keeps every argument a single, literal word on the node.

asyncssh exceptions are translated here and go no further.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from provisioner.errors import CommandTimeout, HostKeyRejected, NodeUnreachable
from provisioner.executor import Argv, CommandResult
from provisioner.settings import Settings

log = logging.getLogger(__name__)
CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class SshOptions:
    user: str
    client_key: Path
    known_hosts: Path
    port: int = 22
    connect_timeout: float = 10.0
    keepalive_interval: float = 15.0
    max_sessions: int = 8
    max_output: int = 16 * 1024 * 1024  # bytes of stdout (and of stderr) kept per command


class SshExecutor:
    def __init__(self, options: SshOptions) -> None:
        self._options = options
        self._connections: dict[str, asyncssh.SSHClientConnection] = {}
        self._connect_locks: dict[str, asyncio.Lock] = {}
        self._sessions: dict[str, asyncio.Semaphore] = {}

    async def run(self, host: str, argv: Argv, *, timeout: float, check: bool = True) -> CommandResult:
        command = shlex.join(argv)
        semaphore = self._sessions.setdefault(host, asyncio.Semaphore(self._options.max_sessions))
        async with semaphore:
            connection = await self._connection(host)
            try:
                status, stdout, stderr = await self._execute(connection, command, host=host, argv=argv, timeout=timeout)
            except (asyncssh.ChannelOpenError, asyncssh.ConnectionLost, asyncssh.DisconnectError, ConnectionError) as e:
                # The pooled connection died (node restarted, network blip): the next command reconnects.
                self._forget(host, connection)
                raise NodeUnreachable(host, f"connection lost: {e}", delay=0.2) from e
        result = CommandResult(host=host, argv=argv, exit_status=status, stdout=stdout, stderr=stderr)
        return result.check() if check else result

    async def _execute(
        self, connection: asyncssh.SSHClientConnection, command: str, *, host: str, argv: Argv, timeout: float
    ) -> tuple[int, str, str]:
        limit = self._options.max_output
        process: asyncssh.SSHClientProcess[bytes] | None = None
        try:
            async with asyncio.timeout(timeout):
                process = await connection.create_process(command, encoding=None)
                stdout, stderr = await asyncio.gather(_bounded(process.stdout, limit), _bounded(process.stderr, limit))
                await process.wait_closed()
        except TimeoutError:
            log.warning("%s on %s timed out after %gs; stopping it", argv[0] if argv else "?", host, timeout)
            if process is not None:
                with contextlib.suppress(asyncssh.Error, OSError):
                    process.send_signal("KILL")
            raise CommandTimeout(host, argv, timeout) from None
        finally:
            if process is not None:
                process.close()
        status = process.exit_status if process.exit_status is not None else -1
        return status, stdout, stderr

    async def _connection(self, host: str) -> asyncssh.SSHClientConnection:
        connection = self._connections.get(host)
        if connection is not None and not connection.is_closed():
            return connection
        lock = self._connect_locks.setdefault(host, asyncio.Lock())
        async with lock:
            connection = self._connections.get(host)
            if connection is not None and not connection.is_closed():
                return connection
            connection = await self._connect(host)
            self._connections[host] = connection
            return connection

    async def _connect(self, host: str) -> asyncssh.SSHClientConnection:
        options = self._options
        try:
            return await asyncssh.connect(
                host,
                port=options.port,
                username=options.user,
                client_keys=[str(options.client_key)],
                known_hosts=str(options.known_hosts),
                config=[],  # never read ~/.ssh/config: every option is explicit
                connect_timeout=options.connect_timeout,
                keepalive_interval=options.keepalive_interval,
                agent_path=None,
            )
        except asyncssh.HostKeyNotVerifiable as e:
            raise HostKeyRejected(host, str(e)) from e
        except asyncssh.PermissionDenied as e:
            raise NodeUnreachable(host, f"authentication as {options.user} refused: {e}", delay=10.0) from e
        except (OSError, asyncssh.Error) as e:
            raise NodeUnreachable(host, f"{type(e).__name__}: {e}") from e

    def _forget(self, host: str, connection: asyncssh.SSHClientConnection) -> None:
        if self._connections.get(host) is connection:
            del self._connections[host]
        connection.abort()

    async def close(self) -> None:
        connections = list(self._connections.values())
        self._connections.clear()
        for connection in connections:
            connection.close()
        for connection in connections:
            with contextlib.suppress(asyncssh.Error, OSError):
                await connection.wait_closed()


async def _bounded(stream: asyncssh.SSHReader[bytes], limit: int) -> str:
    """The stream's text up to ``limit`` bytes; the rest is read and dropped, and counted."""
    kept = bytearray()
    dropped = 0
    while chunk := await stream.read(CHUNK):
        room = limit - len(kept)
        kept += chunk[:room]
        dropped += max(len(chunk) - room, 0)
    text = kept.decode(errors="replace")
    return text + f"\n[{dropped} more bytes of output dropped]" if dropped else text


def ssh_executor(settings: Settings) -> SshExecutor:
    """The executor the settings describe (``PROVISIONER_SSH__*``)."""
    ssh = settings.ssh
    return SshExecutor(
        SshOptions(
            user=ssh.user,
            client_key=ssh.key_file,
            known_hosts=ssh.known_hosts,
            port=ssh.port,
            connect_timeout=ssh.connect_timeout,
            max_sessions=ssh.max_sessions_per_host,
        )
    )
