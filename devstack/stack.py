"""Access to the real local stack (Kafka broker, gluster nodes) for integration and e2e tests.

The stack is started by ``deploy/dev/stack up`` (``deploy/dev/test`` and ``.ci/run`` do it first).
If it is not up, the fixture starts it; if that fails, the test run fails with the reason. There
are no skips: a missing part is a failing test.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from provisioner.bus.topics import topic_partitions
from provisioner.errors import TemporaryError
from provisioner.events import catalog, models
from provisioner.events.catalog import is_terminal
from provisioner.events.envelope import Event, decode_result, encode, new_event
from provisioner.executor.ssh import SshExecutor, SshOptions
from provisioner.settings import KafkaSettings

REPO = Path(__file__).resolve().parent.parent
DEV_STATE = Path(os.environ.get("DEV_STATE", REPO / ".dev"))
STACK = REPO / "deploy" / "dev" / "stack"
GLUSTER_SH = REPO / "deploy" / "dev" / "gluster.sh"


def read_env(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        key, eq, value = line.partition("=")
        if eq and not line.startswith("#"):
            values[key.strip()] = value.strip()
    return values


def ensure_stack() -> None:
    status = subprocess.run([str(STACK), "status"], capture_output=True, text=True)
    if status.returncode == 0 and (DEV_STATE / "provisioner.env").is_file():
        return
    started = subprocess.run([str(STACK), "up"], capture_output=True, text=True)
    if started.returncode != 0:
        raise RuntimeError(
            f"the local stack is not up and `deploy/dev/stack up` failed (exit {started.returncode}):\n"
            f"{started.stderr[-4000:]}"
        )


def gluster_sh(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``deploy/dev/gluster.sh ARGS`` (e.g. ``stop-service node3 glusterd``) on the stack's sandbox."""
    return subprocess.run(
        [str(GLUSTER_SH), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "DEV_STATE": str(DEV_STATE)},
    )


def must(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, f"{done.args}: exit {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    env: dict[str, str]
    gluster: dict[str, str]
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:8]}")

    @property
    def bootstrap(self) -> str:
        return self.env["PROVISIONER_KAFKA__BOOTSTRAP"]

    @property
    def nodes(self) -> list[str]:
        return self.gluster["GLUSTER_NODES"].split(",")

    def topic(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def daemon_env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
        env.update(self.env)
        env.update(
            {
                "PROVISIONER_KAFKA__REQUESTS_TOPIC": self.topic("requests"),
                "PROVISIONER_KAFKA__RESULTS_TOPIC": self.topic("results"),
                "PROVISIONER_KAFKA__STATE_TOPIC": self.topic("state"),
                "PROVISIONER_KAFKA__DLQ_TOPIC": self.topic("dlq"),
                "PROVISIONER_KAFKA__GROUP_ID": self.topic("group"),
                "PROVISIONER_KAFKA__TRANSACTIONAL_ID_PREFIX": self.topic("tx"),
                "PROVISIONER_KAFKA__REQUESTS_PARTITIONS": "3",
                "PROVISIONER_STORAGE__FSTAB": "/var/lib/provisioner/fstab",
                "PROVISIONER_WORKER__RETRY_BACKOFF": "0.2",
                "PROVISIONER_WORKER__MAX_ATTEMPTS": "3",
                "PROVISIONER_WORKER__SHUTDOWN_GRACE": "10",
                "PROVISIONER_KAFKA__SESSION_TIMEOUT": "3",
            }
        )
        env.update(extra)
        return env

    def ssh(self) -> SshExecutor:
        return SshExecutor(
            SshOptions(
                user="root",
                client_key=Path(self.gluster["GLUSTER_SSH_KEY"]),
                known_hosts=Path(self.gluster["GLUSTER_KNOWN_HOSTS"]),
            )
        )

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "provisioner", *args],
            env=self.daemon_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def assert_no_drift(self, cluster: str) -> None:
        """``provisioner reconcile`` agrees: every brick and volume on the nodes is one state names, once."""
        checked = self.cli("reconcile", "--cluster", cluster)
        assert checked.returncode == 0 and "no drift" in checked.stdout, f"{checked.stdout}{checked.stderr}"


def load_stack() -> Stack:
    ensure_stack()
    return Stack(env=read_env(DEV_STATE / "provisioner.env"), gluster=read_env(DEV_STATE / "gluster" / "env"))


def die_with_parent() -> None:
    """In a test's child process: SIGTERM it when the test runner dies (killed, timed out), so a
    daemon never outlives its test and keeps taking partitions of the shared broker."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1


class Daemon:
    """``provisioner run`` (or another long-running command, such as ``watch``) as a real child process."""

    def __init__(
        self,
        stack: Stack,
        log: Path,
        *,
        extra_env: dict[str, str] | None = None,
        command: str = "run",
        http: str = "PROVISIONER_HTTP__",
        ready_path: str = "/readyz",
    ) -> None:
        """``http``: the prefix of the process's HTTP settings (``PROVISIONER_CSI__`` for the node
        plugin); ``ready_path``: what ``wait_ready`` polls."""
        self.command = command
        self.extra_env = extra_env or {}
        self.port = free_port()
        self.log = log
        self.stack = stack
        self.http = http
        self.ready_path = ready_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = self.stack.daemon_env(
            **{f"{self.http}PORT": str(self.port), f"{self.http}HOST": "127.0.0.1"}, **self.extra_env
        )
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "provisioner", self.command],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )

    async def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"daemon exited with {self.process.returncode}:\n{self.tail()}")
                try:
                    async with session.get(f"http://127.0.0.1:{self.port}{self.ready_path}") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.3)
        raise RuntimeError(f"daemon not ready within {timeout}s:\n{self.tail()}")

    async def metrics(self) -> str:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{self.port}/metrics") as r:
            return await r.text()

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, as when a node dies."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self, timeout: float = 30) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.terminate()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""


async def produce(
    stack: Stack,
    value: bytes,
    *,
    key: bytes | None,
    headers: list[tuple[str, bytes]] | None = None,
    topic: str | None = None,
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic or stack.topic("requests"), value=value, key=key, headers=headers or [])
    finally:
        await producer.stop()


@dataclass
class TopicReader:
    """Reads a topic from the beginning with read_committed, remembering everything it saw."""

    stack: Stack
    topic: str
    records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = field(default_factory=list)
    consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> TopicReader:
        settings = KafkaSettings(bootstrap=self.stack.bootstrap)
        deadline = time.monotonic() + 60
        while True:
            try:
                tps = await topic_partitions(settings, self.topic)
                break
            except TemporaryError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.stack.bootstrap,
            isolation_level="read_committed",
            enable_auto_commit=False,
            group_id=None,
        )
        await self.consumer.start()
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.consumer is not None
        await self.consumer.stop()

    async def poll(self, seconds: float = 0.5) -> None:
        assert self.consumer is not None
        batches = await self.consumer.getmany(timeout_ms=int(seconds * 1000))
        for records in batches.values():
            self.records += [(r.key, r.value, list(r.headers)) for r in records]

    def terminal_count(self, request_id: str) -> int:
        """How many terminal results for ``request_id`` have been read so far."""
        events = (decode_result(value) for _, value, _ in self.records)
        return sum(1 for e in events if is_terminal(e.type) and getattr(e.data, "request_id", None) == request_id)

    async def wait_result(self, request_id: str, timeout: float = 240) -> Event:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _, value, _ in self.records:
                event = decode_result(value)
                if is_terminal(event.type) and getattr(event.data, "request_id", None) == request_id:
                    return event
            await self.poll()
        raise TimeoutError(f"no result for {request_id} within {timeout}s")


TOPOLOGY = REPO / "deploy" / "dev" / "topology.json"


async def load_topology(stack: Stack, cluster: str) -> None:
    """Load the dev topology under ``cluster`` and wait for its result (the daemon must be running)."""
    document = json.loads(TOPOLOGY.read_text())["clusters"][0]
    data = models.LoadTopology.model_validate({"cluster": cluster, "nodes": document["nodes"]})
    event = new_event(catalog.TOPOLOGY_LOAD_REQUESTED, data, source="/tests")
    value, headers = encode(event)
    async with TopicReader(stack, stack.topic("results")) as results:
        await produce(stack, value, key=cluster.encode(), headers=headers)
        result = await results.wait_result(event.id, timeout=60)
    assert result.type.endswith(".succeeded.v1"), result.data
