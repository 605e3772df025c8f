"""Provision, snapshot and clone on the storage guests' real disks (LVM thin), against the floor.

The daemon is ``provisioner run`` as a real process (topics and cluster of its own) managing the
QEMU guests; each request goes through the real broker, and its latency is from handing it to the
producer to consuming its result. The floor, in the same run and interleaved with it, is the same
node work without the daemon: this script calls the daemon's own storage layer
(``VolumeOperations``, ``SnapshotOperations``: the same argv, the same order, over the same SSH
transport) directly, with no Kafka, no intent records and no result transactions. What separates
the two is what the daemon adds to the node work.

Each round makes a fresh replica-3 volume and takes it through:
  provision -> snapshot -> clone (from the snapshot) -> delete clone -> delete snapshot -> delete,
first by the daemon, then by the floor. The guests are scrubbed before and after.

    python -m bench.guests               # 3 rounds: about 10 minutes under TCG
    python -m bench.guests --repeat 1    # a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from bench import common
from bench.common import REPO, RESULTS, GiB, Report, bar_chart_svg, summary, table
from bench.e2e import Bus
from devstack.guests import Guests, load_guests
from devstack.stack import Daemon, load_stack
from provisioner.domain import (
    CloneSource,
    ClusterId,
    Replicate,
    Snapshot,
    SnapshotId,
    Volume,
    VolumeId,
    new_id,
    volume_name_for,
)
from provisioner.events import catalog, models, results
from provisioner.events.envelope import Event, new_event
from provisioner.handling.clones import planned_clone
from provisioner.planning.allocator import PlacementRequest, plan_volume
from provisioner.planning.clusters import cluster_from, with_measured
from provisioner.settings import StorageSettings
from provisioner.storage.operations import VolumeOperations
from provisioner.storage.snapshots import SnapshotOperations

SOURCE = "/bench/guests"
ACTIONS = ("provision", "snapshot", "clone", "delete clone", "delete snapshot", "delete")


@dataclasses.dataclass
class Compared:
    action: str
    daemon: dict[str, float]
    floor: dict[str, float]

    @property
    def ratio(self) -> float:
        return self.daemon["p50"] / self.floor["p50"] if self.floor.get("p50") and "p50" in self.daemon else math.nan


def heketi_topology(cluster: str, guests: Guests) -> models.LoadTopology:
    nodes = [
        {
            "node": {"hostnames": {"manage": [n], "storage": [n]}, "zone": i},
            "devices": [{"name": d} for d in guests.disks],
        }
        for i, n in enumerate(guests.nodes, start=1)
    ]
    return models.LoadTopology.model_validate({"cluster": cluster, "nodes": nodes})


class ByDaemon:
    def __init__(self, bus: Bus, cluster: str) -> None:
        self.bus = bus
        self.cluster = cluster

    async def one(self, type_: str, data: models.Model) -> tuple[float, Event]:
        [latency], _, [result] = await self.bus.round([new_event(type_, data, source=SOURCE)], key=self.cluster)
        if not catalog.is_success(result.type):
            raise RuntimeError(f"{type_}: {result.data}")
        return latency, result

    async def round(self, size: int) -> dict[str, float]:
        c, name = self.cluster, f"bd_{uuid.uuid4().hex[:8]}"
        snap, copy = f"{name}_s", f"{name}_c"
        took = {}
        took["provision"], _ = await self.one(
            catalog.PROVISION_REQUESTED, models.ProvisionVolume(cluster=c, size=size, name=name)
        )
        took["snapshot"], _ = await self.one(
            catalog.SNAPSHOT_CREATE_REQUESTED, models.CreateSnapshot(cluster=c, volume=name, name=snap)
        )
        took["clone"], _ = await self.one(
            catalog.CLONE_REQUESTED, models.CloneVolume(cluster=c, name=copy, from_snapshot=snap)
        )
        took["delete clone"], _ = await self.one(catalog.DELETE_REQUESTED, models.DeleteVolume(cluster=c, name=copy))
        took["delete snapshot"], _ = await self.one(
            catalog.SNAPSHOT_DELETE_REQUESTED, models.DeleteSnapshot(cluster=c, name=snap)
        )
        took["delete"], _ = await self.one(catalog.DELETE_REQUESTED, models.DeleteVolume(cluster=c, name=name))
        return took


class ByHand:
    """The floor: the daemon's storage layer called directly, one step after the other."""

    def __init__(self, guests: Guests, load: models.LoadTopology, capacity: int) -> None:
        self.executor = guests.ssh()
        self.ops = VolumeOperations(self.executor, StorageSettings(fstab="/etc/fstab"), owner="bench-floor")
        self.snapshots = SnapshotOperations(self.ops)
        cluster = cluster_from(load)
        self.cluster = with_measured(cluster, {d.id: capacity for n in cluster.nodes for d in n.devices})

    async def round(self, size: int) -> dict[str, float]:
        took: dict[str, float] = {}

        async def timed(action: str, step: Callable[[], Awaitable[Any]]) -> None:
            started = time.monotonic()
            await step()
            took[action] = time.monotonic() - started

        volume_id = VolumeId(new_id())
        plan = plan_volume(PlacementRequest(volume=volume_id, size=size, durability=Replicate()), self.cluster, {})
        volume = Volume(
            id=volume_id,
            name=volume_name_for(volume_id),
            cluster=self.cluster.id,
            size=size,
            durability=Replicate(),
            bricks=plan.bricks,
        )
        snapshot = Snapshot(
            id=SnapshotId(new_id()), name=f"floor_{volume_id[:8]}", cluster=ClusterId(self.cluster.id), volume=volume_id
        )
        clone_id = VolumeId(new_id())
        source = CloneSource(snapshot=snapshot.name, origin=volume_id)
        clone = planned_clone(volume, clone_id, volume_name_for(clone_id), source, gid=None, request="floor")

        async def provision() -> None:
            await self.ops.create_bricks(self.cluster, volume)
            await self.ops.create_volume(self.cluster, volume)

        async def take_clone() -> None:
            info = await self.snapshots.info(self.cluster, volume, snapshot.name)
            assert info is not None
            await self.snapshots.clone_bricks(self.cluster, volume, clone, info)
            await self.ops.create_volume(self.cluster, clone)

        await timed("provision", provision)
        await timed("snapshot", lambda: self.snapshots.create(self.cluster, volume, snapshot))
        await timed("clone", take_clone)
        await timed("delete clone", lambda: self.ops.remove(self.cluster, clone))
        await timed("delete snapshot", lambda: self.snapshots.delete(self.cluster, volume, snapshot))
        await timed("delete", lambda: self.ops.remove(self.cluster, volume))
        return took


async def run(args: argparse.Namespace, report: Report) -> None:
    guests = load_guests()
    stack = load_stack()
    stack.prefix = f"bench{uuid.uuid4().hex[:8]}"
    cluster = f"g{stack.prefix}"
    stamp = report.started.strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    daemon_log = RESULTS / f"guests-{stamp}.daemon.log"
    await guests.scrub()
    daemon = Daemon(
        stack, daemon_log, extra_env={**guests.daemon_env(), "PROVISIONER_WORKER__RECONCILE_INTERVAL": "3600"}
    )
    bus = Bus(stack, timeout=args.timeout)
    load = heketi_topology(cluster, guests)
    rows: dict[tuple[str, str], list[float]] = {}
    hand: ByHand | None = None
    daemon.start()
    try:
        await daemon.wait_ready()
        await bus.start()
        _, loaded = await ByDaemon(bus, cluster).one(catalog.TOPOLOGY_LOAD_REQUESTED, load)
        assert isinstance(loaded.data, results.TopologyLoaded)
        print(
            f"daemon up ({stack.prefix}); {loaded.data.nodes} guests, {loaded.data.devices} devices loaded", flush=True
        )
        hand = ByHand(guests, load, capacity=3 * GiB)
        for number in range(1, args.repeat + 1):
            for who, side in (("daemon", ByDaemon(bus, cluster)), ("floor", hand)):
                took = await side.round(args.size)
                for action, seconds in took.items():
                    rows.setdefault((action, who), []).append(seconds)
                print(f"  round {number} {who}: " + ", ".join(f"{a} {s:.1f}s" for a, s in took.items()), flush=True)
    finally:
        await bus.stop()
        daemon.stop()
        if hand is not None:
            await hand.executor.close()
        await guests.scrub()
    compared = [Compared(a, summary(rows.get((a, "daemon"), [])), summary(rows.get((a, "floor"), []))) for a in ACTIONS]
    for c in compared:
        report.target(f"{c.action}: daemon p50 / floor p50", measured=round(c.ratio, 3), limit=1.3, unit="x")
    report.data["comparison"] = [dataclasses.asdict(c) | {"p50_ratio": c.ratio} for c in compared]
    report.data["samples"] = {f"{a}/{w}": v for (a, w), v in rows.items()}
    print()
    headers = ("action", "daemon p50 s", "daemon max s", "floor p50 s", "floor max s", "daemon/floor")
    cells = [(c.action, c.daemon["p50"], c.daemon["max"], c.floor["p50"], c.floor["max"], c.ratio) for c in compared]
    print(table(headers, cells))
    picture = RESULTS / f"guests-{stamp}.svg"
    picture.write_text(
        bar_chart_svg(
            f"On the storage guests (TCG, real LVM thin): p50 of {args.repeat} round(s)",
            [(c.action, [("daemon", c.daemon["p50"]), ("floor", c.floor["p50"])]) for c in compared],
            unit="s",
        )
    )
    report.data["picture"] = str(picture.relative_to(REPO))
    print(f"picture: {picture.relative_to(REPO)}")


def main() -> int:
    parser = common.parser("guests", __doc__)
    parser.add_argument("--repeat", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--size", type=common.size, default=GiB, help="volume size (default 1GiB)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for one result")
    return common.run_bench("guests", parser.parse_args(), run)


if __name__ == "__main__":
    raise SystemExit(main())
