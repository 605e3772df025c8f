"""End to end: provision and delete requests through the real broker and daemon, against the floor.

The daemon is ``provisioner run`` as a real process on the local stack (its own topics, consumer
group and cluster id, so other people's tests are not disturbed). Requests are produced to the
requests topic; a reader of the results topic (``read_committed``) stamps the moment each result
is consumed. Latency = result consumed - request handed to the producer.

The floor, in the same run, is the same node work without the daemon (see ``bench/floor.py``):
exactly the daemon's argv, brick preparation on the three nodes in parallel, then gluster
create + set id + start, issued over SSH by this script.

Phases (replica 3, --size each):
  one at a time   --repeat times: daemon provision, daemon delete, floor provision, floor delete
                  (interleaved, so both see the same machine); this is the N = 1 row
  burst of N      for each N > 1 in --n: N provision requests at once to the daemon, then N deletes
                  at once; then the floor provisions N volumes at once and deletes them at once
Every volume created is deleted (by the daemon's delete request, or for the floor by the same
stop/delete/umount/rm commands); if the run breaks, the leftovers are removed with the floor's
delete. The daemon's /metrics are scraped around every phase; the breakdown table says where its
time goes (handler steps, node commands, the part outside the handler: queueing and Kafka).

    python -m bench.e2e                 # N = 1 (x5), 10, 30: about 6-10 minutes on 2 busy cores
    python -m bench.e2e --n 1,10        # less
    python -m bench.e2e --n 1 --repeat 3 --warmup 0   # a smoke run
    python -m bench.e2e --daemon-rev HEAD --n 1,30    # the committed daemon against the same floor
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import generate_latest

from bench import common
from bench.common import (
    REPO,
    RESULTS,
    GiB,
    Report,
    counts,
    histogram_delta,
    loadavg,
    parse_metrics,
    size,
    summary,
    table,
)
from bench.floor import Floor
from devstack.stack import Daemon, Stack, load_stack
from provisioner.bus.publisher import PartitionPublisher
from provisioner.bus.records import Outgoing
from provisioner.bus.topics import topic_partitions
from provisioner.domain import Brick, BrickId, ClusterId, DeviceId, NodeId, Replicate, Volume, VolumeId
from provisioner.errors import InvalidEvent
from provisioner.events import catalog, models, results
from provisioner.events.catalog import is_terminal
from provisioner.events.envelope import Event, decode_result, encode, new_event
from provisioner.executor import Executor
from provisioner.executor.measured import MeasuredExecutor
from provisioner.planning.clusters import cluster_from
from provisioner.settings import KafkaSettings

log = logging.getLogger("bench.e2e")
SOURCE = "/bench/e2e"
TOPOLOGY = REPO / "deploy" / "dev" / "topology.json"
REQUEST_SECONDS = "provisioner_request_duration_seconds"
STEP_SECONDS = "provisioner_step_duration_seconds"
COMMAND_SECONDS = "provisioner_node_command_duration_seconds"
# Settings the test harness shortens so failures show quickly; the benchmark runs the defaults.
TEST_ONLY = (
    "PROVISIONER_WORKER__RETRY_BACKOFF",
    "PROVISIONER_WORKER__MAX_ATTEMPTS",
    "PROVISIONER_WORKER__SHUTDOWN_GRACE",
    "PROVISIONER_KAFKA__SESSION_TIMEOUT",
    "PROVISIONER_KAFKA__REQUESTS_PARTITIONS",
)


class BenchDaemon(Daemon):
    """``provisioner run`` with the stack's topics and default worker settings; from ``tree`` (a
    directory holding a ``provisioner`` package) instead of the working tree when given."""

    def __init__(self, stack: Stack, log: Path, *, tree: Path | None = None) -> None:
        super().__init__(stack, log)
        self.tree = tree

    def start(self) -> None:
        env = self.stack.daemon_env(PROVISIONER_HTTP__PORT=str(self.port), PROVISIONER_HTTP__HOST="127.0.0.1")
        for name in TEST_ONLY:
            env.pop(name, None)
        if self.tree is not None:
            env["PYTHONPATH"] = str(self.tree)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "provisioner", "run"],
                env=env,
                cwd=self.tree or REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
            )


def export_revision(revision: str, into: Path) -> str:
    """``git archive`` the ``provisioner`` package of ``revision`` into ``into``; returns the commit."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{revision}^{{commit}}"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    archive = subprocess.run(["git", "archive", commit, "provisioner"], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return commit


class Bus:
    """One producer of requests and one reader of results that stamps when each result is consumed."""

    def __init__(self, stack: Stack, *, timeout: float) -> None:
        self.stack = stack
        self.timeout = timeout
        self.arrived: dict[str, tuple[float, Event]] = {}
        self._new = asyncio.Event()
        self._producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, enable_idempotence=True, acks="all")
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=stack.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._producer.start()
        await self._consumer.start()
        partitions = await topic_partitions(KafkaSettings(bootstrap=self.stack.bootstrap), self.stack.topic("results"))
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)
        for tp in partitions:
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            now = time.monotonic()
            for records in batches.values():
                for record in records:
                    try:
                        event = decode_result(record.value)
                    except InvalidEvent:
                        continue
                    request_id = getattr(event.data, "request_id", None)
                    if request_id and is_terminal(event.type):  # progress events are not the result
                        self.arrived[request_id] = (now, event)
            if batches:
                self._new.set()

    async def round(self, events: Sequence[Event], *, key: str) -> tuple[list[float], float, list[Event]]:
        """Produce all ``events`` at once; return each one's latency, the wall time and the results."""
        started = time.monotonic()
        sent: dict[str, float] = {}
        deliveries = []
        for event in events:
            value, headers = encode(event)
            sent[event.id] = time.monotonic()
            deliveries.append(
                await self._producer.send(self.stack.topic("requests"), value=value, key=key.encode(), headers=headers)
            )
        await asyncio.gather(*deliveries)
        deadline = started + self.timeout
        while True:
            self._new.clear()
            missing = [e.id for e in events if e.id not in self.arrived]
            if not missing:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(missing)} of {len(events)} results missing after {self.timeout:g}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), 1.0)
        arrived = [self.arrived[e.id] for e in events]
        latencies = [at - sent[e.id] for e, (at, _) in zip(events, arrived, strict=True)]
        return latencies, max(at for at, _ in arrived) - started, [result for _, result in arrived]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._producer.stop()
        await self._consumer.stop()


@dataclass
class Group:
    """All samples of one (action, mode, who)."""

    action: str
    mode: str
    who: str
    n: int
    latencies: list[float] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)
    loads: list[list[float]] = field(default_factory=list)
    requests: dict[str, dict[str, float]] = field(default_factory=dict)
    steps: dict[str, dict[str, float]] = field(default_factory=dict)
    commands: dict[str, dict[str, float]] = field(default_factory=dict)
    floor_phases: dict[str, float] = field(default_factory=dict)

    @property
    def volumes(self) -> int:
        return len(self.latencies)

    def add(self, latencies: list[float], wall: float, load: list[float]) -> None:
        self.latencies += latencies
        self.walls.append(wall)
        self.loads.append(load)

    def merge(self, into: dict[str, dict[str, float]], delta: dict[str, dict[str, float]]) -> None:
        for key, row in delta.items():
            target = into.setdefault(key, {"count": 0.0, "seconds": 0.0})
            target["count"] += row["count"]
            target["seconds"] += row["seconds"]

    def as_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "mode": self.mode,
            "who": self.who,
            "n": self.n,
            "latency_seconds": summary(self.latencies),
            "latencies": self.latencies,
            "wall_seconds": self.walls,
            "loadavg": self.loads,
            "request_duration": self.requests,
            "steps": self.steps,
            "node_commands": self.commands,
            "floor_phases_seconds": self.floor_phases,
        }


class Run:
    def __init__(
        self, args: argparse.Namespace, stack: Stack, daemon: Daemon, bus: Bus, floor: Floor, executor: Executor
    ) -> None:
        self.args = args
        self.executor = executor
        self.stack = stack
        self.daemon = daemon
        self.bus = bus
        self.floor = floor
        self.cluster = floor.cluster.id
        self.groups: dict[tuple[str, str, str], Group] = {}
        self.daemon_live: dict[str, Volume] = {}
        self.floor_live: dict[str, Volume] = {}
        self.made: list[Volume] = []  # every volume either side created, for the leftover check
        self._serial = 0

    def names(self, who: str, n: int) -> list[str]:
        names = []
        for _ in range(n):
            self._serial += 1
            names.append(f"{self.stack.prefix}_{who[0]}{self._serial:03d}")
        return names

    def group(self, action: str, mode: str, who: str, n: int) -> Group:
        return self.groups.setdefault((action, mode, who), Group(action, mode, who, n))

    # --- daemon ---------------------------------------------------------------------------------

    async def daemon_round(self, action: str, names: list[str], group: Group | None) -> None:
        if action == "provision":
            events = [
                new_event(
                    catalog.PROVISION_REQUESTED,
                    models.ProvisionVolume(cluster=self.cluster, size=self.args.size, name=name),
                    source=SOURCE,
                )
                for name in names
            ]
        else:
            events = [
                new_event(catalog.DELETE_REQUESTED, models.DeleteVolume(cluster=self.cluster, name=name), source=SOURCE)
                for name in names
            ]
        before = parse_metrics(await self.daemon.metrics())
        load = loadavg()
        latencies, wall, answers = await self.bus.round(events, key=self.cluster)
        after = parse_metrics(await self.daemon.metrics())
        for name, result in zip(names, answers, strict=True):
            if isinstance(result.data, results.RequestFailed):
                raise RuntimeError(f"daemon {action} {name} failed: {result.data.reason}: {result.data.message}")
            if isinstance(result.data, results.VolumeProvisioned):
                self.daemon_live[name] = _volume(result.data.volume)
                self.made.append(self.daemon_live[name])
            else:
                self.daemon_live.pop(name, None)
        if group is not None:
            group.add(latencies, wall, load)
            group.merge(group.requests, histogram_delta(before, after, REQUEST_SECONDS, "type"))
            group.merge(group.steps, histogram_delta(before, after, STEP_SECONDS, "step"))
            group.merge(group.commands, histogram_delta(before, after, COMMAND_SECONDS, "command"))

    # --- floor ----------------------------------------------------------------------------------

    async def floor_round(self, action: str, names: list[str], group: Group | None) -> None:
        before = parse_metrics(generate_latest().decode())
        busy_before = self.floor.busy_retries
        load = loadavg()
        if action == "provision":
            volumes = [self.floor.plan(name, self.args.size) for name in names]
            for volume in volumes:
                self.floor_live[volume.name] = volume
            self.made += volumes
            started = time.monotonic()
            timings = await asyncio.gather(*(self.floor.provision(v) for v in volumes))
        else:
            volumes = [self.floor_live[name] for name in names]
            started = time.monotonic()
            timings = await asyncio.gather(*(self.floor.delete(v) for v in volumes))
            for volume in volumes:
                self.floor_live.pop(volume.name)
                self.floor.forget(volume)
        wall = time.monotonic() - started
        busy = self.floor.busy_retries - busy_before
        after = parse_metrics(generate_latest().decode())
        if group is not None:
            group.add([t.started + t.finished - started for t in timings], wall, load)
            group.merge(group.commands, histogram_delta(before, after, COMMAND_SECONDS, "command"))
            for phase in ("bricks", "gluster"):
                group.floor_phases[phase] = group.floor_phases.get(phase, 0.0) + sum(getattr(t, phase) for t in timings)
            group.floor_phases["busy_retries"] = group.floor_phases.get("busy_retries", 0.0) + busy

    # --- phases ---------------------------------------------------------------------------------

    async def warm_up(self) -> None:
        for _ in range(self.args.warmup):
            for who in ("daemon", "floor"):
                [name] = self.names(who, 1)
                step = self.daemon_round if who == "daemon" else self.floor_round
                await step("provision", [name], None)
                await step("delete", [name], None)
        print(f"  warm-up done ({self.args.warmup} volume(s) each)", flush=True)

    async def one_at_a_time(self) -> None:
        for i in range(self.args.repeat):
            for who in ("daemon", "floor"):
                [name] = self.names(who, 1)
                step = self.daemon_round if who == "daemon" else self.floor_round
                await step("provision", [name], self.group("provision", "one at a time", who, 1))
                await step("delete", [name], self.group("delete", "one at a time", who, 1))
            made = self.groups[("provision", "one at a time", "daemon")].latencies[-1]
            floor = self.groups[("provision", "one at a time", "floor")].latencies[-1]
            print(f"  one at a time {i + 1}/{self.args.repeat}: daemon {made:.2f}s, floor {floor:.2f}s", flush=True)

    async def burst(self, n: int) -> None:
        mode = f"burst of {n}"
        for who in ("daemon", "floor"):
            names = self.names(who, n)
            step = self.daemon_round if who == "daemon" else self.floor_round
            await step("provision", names, self.group("provision", mode, who, n))
            await step("delete", names, self.group("delete", mode, who, n))
            made = self.groups[("provision", mode, who)].walls[-1]
            gone = self.groups[("delete", mode, who)].walls[-1]
            print(f"  {mode}, {who}: provisioned in {made:.1f}s, deleted in {gone:.1f}s", flush=True)

    async def clean_up(self) -> None:
        """Remove whatever a broken run left: the daemon's volumes by request, then by the floor's commands."""
        if self.daemon_live and self.daemon.process is not None and self.daemon.process.poll() is None:
            with contextlib.suppress(Exception):
                await self.daemon_round("delete", list(self.daemon_live), None)
        for volume in [*self.daemon_live.values(), *self.floor_live.values()]:
            try:
                await self.floor.delete(volume, missing_ok=True)
                print(f"  cleaned up {volume.name}", flush=True)
            except Exception as e:
                print(f"  could not clean up {volume.name}: {e}", file=sys.stderr)
        self.daemon_live.clear()
        self.floor_live.clear()

    async def leftovers(self) -> dict[str, list[str]]:
        """Bricks of ours still on a node (image or mount) and gluster volumes of ours still defined."""
        ids = {b.id for v in self.made for b in v.bricks}
        found: dict[str, list[str]] = {}
        for node in self.floor.cluster.nodes:
            dirs = [d.name for d in node.devices]
            images = await self.executor.run(
                node.manage, ("find", *dirs, "-maxdepth", "1", "-name", "brick_*.img"), timeout=60, check=False
            )
            mounts = await self.executor.run(node.manage, ("findmnt", "-rn", "-o", "TARGET"), timeout=60, check=False)
            mine = sorted(str(i) for i in ids if i in images.stdout or i in mounts.stdout)
            if mine:
                found[node.manage] = mine
        volumes = await gluster_volumes(self.executor, self.floor.cluster.nodes[0].manage)
        ours = [v for v in volumes if v.startswith(self.stack.prefix + "_")]
        if ours:
            found["gluster volumes"] = ours
        return found


async def gluster_volumes(executor: Executor, host: str) -> list[str]:
    listed = await executor.run(host, ("gluster", "--mode=script", "volume", "list"), timeout=60, check=False)
    return [] if "No volumes" in listed.stdout else listed.stdout.split()


def _volume(out: results.VolumeOut) -> Volume:
    bricks = tuple(
        Brick(
            id=BrickId(b.id),
            node=NodeId(b.node),
            device=DeviceId(b.device),
            size=b.size,
            set_index=i // 3,
            arbiter=b.arbiter,
        )
        for i, b in enumerate(out.bricks)
    )
    return Volume(
        id=VolumeId(out.volume_id),
        name=out.name,
        cluster=ClusterId(out.cluster),
        size=out.size,
        durability=Replicate(),
        bricks=bricks,
    )


async def transaction_probe(stack: Stack, samples: int) -> list[float]:
    """Seconds of one transaction carrying one ~800-byte record: what the daemon's intent record costs
    (its result transaction adds the offset commit to that)."""
    topic = stack.topic("probe")
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    settings = KafkaSettings(bootstrap=stack.bootstrap, transactional_id_prefix=stack.topic("probe"))
    publisher = PartitionPublisher(settings, TopicPartition(topic, 0))
    await publisher.start()
    times = []
    try:
        for i in range(samples + 1):
            started = time.monotonic()
            await publisher.publish([Outgoing(topic, f"volume/{i}".encode(), b"x" * 800, [])])
            if i:  # the first one registers the partition with the transaction coordinator
                times.append(time.monotonic() - started)
    finally:
        await publisher.stop()
    return times


async def delete_topics(stack: Stack) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        mine = [t for t in existing if t.startswith(stack.prefix + ".")]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


# --- report ---------------------------------------------------------------------------------------


def per_volume(rows: dict[str, dict[str, float]], volumes: int) -> dict[str, float]:
    return {k: v["count"] / volumes for k, v in rows.items() if k != "true"}


def breakdown(groups: dict[tuple[str, str, str], Group]) -> list[dict[str, Any]]:
    """Where the daemon's time goes, per request (means), next to the floor's."""
    rows = []
    for (action, mode, who), group in groups.items():
        if who != "daemon" or not group.latencies:
            continue
        floor = groups.get((action, mode, "floor"))
        requests = group.requests.get(action, {"count": 0.0, "seconds": 0.0})
        handled = requests["count"] or float(group.volumes)
        handler = requests["seconds"] / handled
        steps = {k: v["seconds"] / handled for k, v in group.steps.items()}
        commands = per_volume(group.commands, group.volumes)
        floor_commands = per_volume(floor.commands, floor.volumes) if floor and floor.volumes else {}
        latency = statistics.fmean(group.latencies)
        rows.append(
            {
                "action": action,
                "mode": mode,
                "n": group.n,
                "mean_latency": latency,
                "mean_handler": handler,
                "steps": steps,
                "handler_outside_steps": handler - sum(steps.values()),
                "outside_handler": latency - handler,
                "concurrency": requests["seconds"] / sum(group.walls) if group.walls else 0.0,
                "ssh_commands_per_volume": sum(commands.values()),
                "floor_ssh_commands_per_volume": sum(floor_commands.values()),
                "floor_mean_latency": statistics.fmean(floor.latencies) if floor and floor.latencies else None,
                "floor_phases_per_volume": {k: v / floor.volumes for k, v in floor.floor_phases.items()}
                if floor and floor.volumes
                else {},
                "commands_per_volume": commands,
                "floor_commands_per_volume": floor_commands,
                "command_mean_seconds": {
                    k: v["seconds"] / v["count"] for k, v in group.commands.items() if v["count"] and k != "true"
                },
                "floor_command_mean_seconds": {
                    k: v["seconds"] / v["count"] for k, v in (floor.commands if floor else {}).items() if v["count"]
                },
            }
        )
    return rows


def comparisons(groups: dict[tuple[str, str, str], Group]) -> list[dict[str, Any]]:
    rows = []
    for (action, mode, who), daemon in groups.items():
        floor = groups.get((action, mode, "floor"))
        if who != "daemon" or floor is None or not daemon.latencies or not floor.latencies:
            continue
        d, f = summary(daemon.latencies), summary(floor.latencies)
        rows.append(
            {
                "action": action,
                "mode": mode,
                "n": daemon.n,
                "samples": daemon.volumes,
                "daemon": {**d, "wall": max(daemon.walls)},
                "floor": {**f, "wall": max(floor.walls)},
                "p50_ratio": d["p50"] / f["p50"],
                "wall_ratio": max(daemon.walls) / max(floor.walls),
            }
        )
    return rows


def print_tables(compared: list[dict[str, Any]], broken_down: list[dict[str, Any]], probe: list[float]) -> None:
    for action in ("provision", "delete"):
        rows = [
            (
                c["mode"],
                c["samples"],
                c["daemon"]["p50"],
                c["daemon"]["p95"],
                c["daemon"]["max"],
                c["daemon"]["wall"],
                c["floor"]["p50"],
                c["floor"]["p95"],
                c["floor"]["max"],
                c["floor"]["wall"],
                f"{c['p50_ratio']:.2f}",
                f"{c['wall_ratio']:.2f}",
            )
            for c in compared
            if c["action"] == action
        ]
        print(f"\n{action.capitalize()}: latency request produced -> result consumed, seconds (wall = whole phase)")
        print(
            table(
                (
                    "mode",
                    "volumes",
                    "daemon p50",
                    "p95",
                    "max",
                    "wall",
                    "floor p50",
                    "p95",
                    "max",
                    "wall",
                    "p50 x",
                    "wall x",
                ),
                rows,
            )
        )
    names = sorted({s for b in broken_down for s in b["steps"]})
    print("\nWhere the daemon's time goes: mean seconds per request")
    print(
        table(
            (
                "action",
                "mode",
                "latency",
                "handler",
                *names,
                "intent+waits",
                "outside handler",
                "concurrency",
                "ssh/vol",
                "floor ssh/vol",
                "floor latency",
                "floor bricks",
                "floor gluster",
                "floor busy/vol",
            ),
            [
                (
                    b["action"],
                    b["mode"],
                    b["mean_latency"],
                    b["mean_handler"],
                    *(b["steps"].get(s, 0.0) for s in names),
                    b["handler_outside_steps"],
                    b["outside_handler"],
                    f"{b['concurrency']:.2f}",
                    f"{b['ssh_commands_per_volume']:.1f}",
                    f"{b['floor_ssh_commands_per_volume']:.1f}",
                    b["floor_mean_latency"] or 0.0,
                    b["floor_phases_per_volume"].get("bricks", 0.0),
                    b["floor_phases_per_volume"].get("gluster", 0.0),
                    f"{b['floor_phases_per_volume'].get('busy_retries', 0.0):.1f}",
                )
                for b in broken_down
            ],
        )
    )
    if broken_down:
        print("\nNode commands: calls per volume and mean seconds per call (bursts: gluster commands only)")
        command_rows: list[tuple[object, ...]] = []
        for b in broken_down:
            names = sorted({*b["commands_per_volume"], *b["floor_commands_per_volume"]})
            for c in names:
                if b["mode"] != "one at a time" and not c.startswith("gluster"):
                    continue
                command_rows.append(
                    (
                        b["action"],
                        b["mode"],
                        c,
                        f"{b['commands_per_volume'].get(c, 0):.1f}",
                        b["command_mean_seconds"].get(c, 0.0),
                        f"{b['floor_commands_per_volume'].get(c, 0):.1f}",
                        b["floor_command_mean_seconds"].get(c, 0.0),
                    )
                )
        print(
            table(
                ("action", "mode", "command", "daemon calls", "daemon mean s", "floor calls", "floor mean s"),
                command_rows,
            )
        )
    if probe:
        s = summary(probe)
        print(
            f"\nKafka transaction with one record (the intent record's cost): p50 {s['p50'] * 1000:.1f} ms, "
            f"p95 {s['p95'] * 1000:.1f} ms over {s['n']}"
        )


# --- entry point ----------------------------------------------------------------------------------


async def run(args: argparse.Namespace, report: Report) -> None:
    stack = load_stack()
    stack.prefix = f"bench{uuid.uuid4().hex[:8]}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    daemon_log = RESULTS / f"e2e-{report.started.strftime('%Y%m%dT%H%M%SZ')}.daemon.log"
    report.data["prefix"] = stack.prefix
    report.data["daemon_log"] = str(daemon_log.relative_to(REPO))
    # The dev topology under this run's own cluster id: node and device ids differ from everyone else's.
    nodes = json.loads(TOPOLOGY.read_text())["clusters"][0]["nodes"]
    load = models.LoadTopology.model_validate({"cluster": stack.prefix, "nodes": nodes})
    cluster = cluster_from(load)
    tree: Path | None = None
    if args.daemon_rev:
        tree = Path(tempfile.mkdtemp(prefix="bench-daemon-"))
        report.data["daemon_revision"] = export_revision(args.daemon_rev, tree)
        print(f"daemon from {args.daemon_rev} ({report.data['daemon_revision'][:12]}), exported to {tree}")
    else:
        report.data["daemon_revision"] = "working tree"
    daemon = BenchDaemon(stack, daemon_log, tree=tree)
    executor = MeasuredExecutor(stack.ssh())
    floor = Floor(executor, cluster)
    bus = Bus(stack, timeout=args.timeout)
    daemon.start()
    bench: Run | None = None
    try:
        await daemon.wait_ready()
        await bus.start()
        _, _, [loaded] = await bus.round(
            [new_event(catalog.TOPOLOGY_LOAD_REQUESTED, load, source=SOURCE)], key=stack.prefix
        )
        if not isinstance(loaded.data, results.TopologyLoaded):
            raise RuntimeError(f"topology load failed: {loaded.data}")
        print(f"daemon up ({stack.prefix}), topology loaded: {loaded.data.nodes} nodes", flush=True)
        others = await gluster_volumes(executor, cluster.nodes[0].manage)
        report.data["other_gluster_volumes_at_start"] = len(others)
        bench = Run(args, stack, daemon, bus, floor, executor)
        await bench.warm_up()
        if 1 in args.n:
            await bench.one_at_a_time()
        for n in sorted(x for x in args.n if x > 1):
            await bench.burst(n)
        probe = await transaction_probe(stack, args.probe) if args.probe else []
    finally:
        if bench is not None:
            report.data["groups"] = [g.as_json() for g in bench.groups.values()]
            await bench.clean_up()
            left = await bench.leftovers()
            report.data["leftovers"] = left
            report.data["volumes_created_and_deleted"] = len(bench.made)
            print(f"  {len(bench.made)} volumes made and deleted; leftovers: {left or 'none'}", flush=True)
        await bus.stop()
        code = daemon.stop()
        await executor.close()
        with contextlib.suppress(Exception):
            await delete_topics(stack)
        if code not in (0, None):
            print(f"daemon exited {code}; log {daemon_log}", file=sys.stderr)
        if tree is not None:
            shutil.rmtree(tree, ignore_errors=True)
    assert bench is not None
    compared = comparisons(bench.groups)
    broken_down = breakdown(bench.groups)
    report.data["comparison"] = compared
    report.data["breakdown"] = broken_down
    report.data["groups"] = [g.as_json() for g in bench.groups.values()]
    report.data["transaction_probe_seconds"] = summary(probe)
    for c in compared:
        if c["mode"] == "one at a time":
            report.target(
                f"one request at a time ({c['action']}): daemon p50 / floor p50",
                measured=round(c["p50_ratio"], 3),
                limit=1.15,
                unit="x",
            )
        if c["mode"] == "burst of 30":
            report.target(
                f"burst of 30 ({c['action']}): daemon wall / floor concurrent wall",
                measured=round(c["wall_ratio"], 3),
                limit=1.2,
                unit="x",
            )
    print_tables(compared, broken_down, probe)


def main() -> int:
    parser = common.parser("e2e", __doc__)
    parser.add_argument(
        "--n",
        type=counts,
        default=[1, 10, 30],
        help="request counts: 1 = one at a time (--repeat samples), N > 1 = a burst of N (default 1,10,30)",
    )
    parser.add_argument("--repeat", type=int, default=5, help="samples of the one-at-a-time row (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed volumes through each side first (default 1)")
    parser.add_argument("--size", type=size, default=GiB, help="volume size, e.g. 1GiB (default)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for a phase's results")
    parser.add_argument("--probe", type=int, default=20, help="Kafka transactions to time for the intent cost")
    parser.add_argument(
        "--daemon-rev",
        help="run the daemon from this git revision (e.g. HEAD) instead of the working tree; the floor is unchanged",
    )
    return common.run_bench("e2e", parser.parse_args(), run, replica=3)


if __name__ == "__main__":
    sys.exit(main())
