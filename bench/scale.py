"""Simulated scale, without storage nodes: the pure allocator and the state rebuild.

Placement. A cluster of N nodes x D devices (zones round robin) is loaded into a ``DesiredState``
from its state record, as the daemon does; E existing volumes are applied as state records
(synthesized: sizes of 1-20 GiB, replica 3 on three random distinct nodes, a random device on each).
Then P new replica-3 1 GiB volumes are placed one after another with ``plan_volume`` on the
state's usage, and each is applied to the state before the next, as the daemon's intent record
does. Reported: the first placement (it builds the placement index), the time per placement after
it, and the time to apply each new volume. The first placements of every configuration are checked
against a brute-force scan of the documented rule (most free device, new zones first, ring
tie-break), so a fast wrong answer cannot pass.

Rebuild. V volume records and their cluster record are written to a fresh compacted state topic
on the real broker; a fresh Python process then rebuilds a ``DesiredState`` with the daemon's own
``StateTopicReader`` (start + catch_up, which is what the daemon does at start-up), timed, with its
resident memory before and after. The same records applied without Kafka give the decode-and-apply
share. The topics are deleted afterwards.

    python -m bench.scale                      # everything (~3-5 minutes on 2 cores)
    python -m bench.scale --rebuild 0          # placement only, no broker needed
    python -m bench.scale --nodes 100 --existing 0,10000 --rebuild 10000   # quick look
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import logging
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from bench.common import REPO, GiB, Report, Stopwatch, loadavg, peak_rss_bytes, rss_bytes, summary, table
from provisioner.bus.state_topic import StateTopicReader
from provisioner.bus.topics import ensure_topics
from provisioner.domain import (
    Brick,
    BrickId,
    Cluster,
    ClusterId,
    Device,
    DeviceId,
    Node,
    NodeId,
    Replicate,
    RequestId,
    Volume,
    VolumeId,
    derive_id,
    volume_name_for,
)
from provisioner.planning.allocator import Limits, PlacementRequest, plan_volume
from provisioner.settings import KafkaSettings
from provisioner.state import DesiredState, StateChange

TiB = 1024**4
EXISTING_SIZES_GIB = (1, 1, 1, 2, 2, 5, 10, 20)


def make_cluster(nodes: int, devices: int, zones: int) -> Cluster:
    cluster_id = ClusterId(f"scale{nodes}")
    built = []
    for i in range(nodes):
        node_id = NodeId(derive_id(cluster_id, "node", str(i)))
        host = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        built.append(
            Node(
                id=node_id,
                manage=host,
                storage=host,
                zone=1 + i % zones,
                devices=tuple(
                    Device(
                        id=DeviceId(derive_id(node_id, "device", f"/dev/sd{j}")), name=f"/dev/sd{j}", capacity=16 * TiB
                    )
                    for j in range(devices)
                ),
            )
        )
    return Cluster(id=cluster_id, nodes=tuple(built))


def existing_volumes(cluster: Cluster, count: int, *, seed: int = 1) -> Iterator[Volume]:
    rnd = random.Random(seed)
    nodes = cluster.nodes
    for i in range(count):
        volume_id = VolumeId(derive_id("bench-existing", cluster.id, str(i)))
        size = rnd.choice(EXISTING_SIZES_GIB) * GiB
        bricks = []
        for position, n in enumerate(rnd.sample(range(len(nodes)), 3)):
            devices = nodes[n].devices
            bricks.append(
                Brick(
                    id=BrickId(derive_id(volume_id, "0", str(position))),
                    node=nodes[n].id,
                    device=devices[rnd.randrange(len(devices))].id,
                    size=size,
                    set_index=0,
                )
            )
        yield Volume(
            id=volume_id,
            name=volume_name_for(volume_id),
            cluster=cluster.id,
            size=size,
            durability=Replicate(),
            bricks=tuple(bricks),
            request=RequestId(derive_id("bench-request", cluster.id, str(i))),
        )


# --- placement ------------------------------------------------------------------------------------


def _ring(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def reference_devices(
    volume: VolumeId, cluster: Cluster, usage: Mapping[DeviceId, int], size: int, hashes: dict[DeviceId, int]
) -> list[DeviceId]:
    """The documented rule by brute force, for one replica-3 set: the smallest
    (zone used by the set, -free bytes, ring distance from hash(volume/0), cluster order)."""
    origin = _ring(f"{volume}/0")
    candidates = [(n, d) for n in cluster.nodes if n.enabled for d in n.devices if d.enabled]
    used_nodes: set[NodeId] = set()
    used_zones: set[int] = set()
    chosen: list[DeviceId] = []
    for _ in range(3):
        best = min(
            (
                (n.zone in used_zones, -(d.capacity - usage.get(d.id, 0)), (hashes[d.id] - origin) % 2**64, slot)
                for slot, (n, d) in enumerate(candidates)
                if n.id not in used_nodes and d.capacity - usage.get(d.id, 0) >= size
            ),
        )
        node, device = candidates[best[3]]
        used_nodes.add(node.id)
        used_zones.add(node.zone)
        chosen.append(device.id)
    return chosen


def measure_placement(args: argparse.Namespace, report: Report) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    limits = Limits()
    for nodes in args.nodes:
        topology = make_cluster(nodes, args.devices, args.zones)
        hashes = {d.id: _ring(d.id) for n in topology.nodes for d in n.devices}
        cluster_record = StateChange.put_cluster(topology)
        most = max(args.existing)
        with Stopwatch() as made:
            records = [StateChange.put_volume(v) for v in existing_volumes(topology, most)]
        print(f"  {nodes} nodes: {most} existing volume records made in {made.seconds:.1f}s", flush=True)
        for existing in args.existing:
            state = DesiredState()
            state.apply(cluster_record)
            with Stopwatch() as loaded:
                for record in records[:existing]:
                    state.apply(record)
            cluster = state.clusters[topology.id]
            usage = state.usage(cluster.id)
            plans: list[float] = []
            plans_cpu: list[float] = []
            applies: list[float] = []
            checked = agreed = 0
            load = loadavg()
            for i in range(args.place):
                request = PlacementRequest(
                    volume=VolumeId(derive_id("bench-new", cluster.id, str(existing), str(i))),
                    size=GiB,
                    durability=Replicate(),
                )
                started, started_cpu = time.perf_counter(), time.thread_time()
                plan = plan_volume(request, cluster, usage, limits)
                plans.append(time.perf_counter() - started)
                plans_cpu.append(time.thread_time() - started_cpu)
                if i < args.check:
                    want = reference_devices(request.volume, cluster, usage, GiB, hashes)
                    checked += 1
                    agreed += [b.device for b in plan.bricks] == want
                volume = Volume(
                    id=request.volume,
                    name=volume_name_for(request.volume),
                    cluster=cluster.id,
                    size=GiB,
                    durability=Replicate(),
                    bricks=plan.bricks,
                )
                change = StateChange.put_volume(volume)
                started = time.perf_counter()
                state.apply(change)
                applies.append(time.perf_counter() - started)
            row = {
                "nodes": nodes,
                "devices": nodes * args.devices,
                "zones": args.zones,
                "existing_volumes": existing,
                "existing_load_seconds": loaded.seconds,
                "placed": args.place,
                "first_placement_ms": plans[0] * 1000,
                "placement_ms": _ms(plans[1:]),
                "placement_cpu_ms": _ms(plans_cpu[1:]),
                "apply_ms": _ms(applies),
                "checked_against_reference": checked,
                "agreed_with_reference": agreed,
                "loadavg": load,
            }
            rows.append(row)
            print(
                f"  {nodes} nodes, {existing} existing: first {row['first_placement_ms']:.1f} ms, "
                f"then p50 {row['placement_ms']['p50']:.3f} ms, reference {agreed}/{checked}",
                flush=True,
            )
            del state, cluster, usage
            gc.collect()
        del records
    report.data["placement"] = rows
    return rows


def _ms(seconds: list[float]) -> dict[str, float]:
    return {k: v * 1000 if k != "n" else v for k, v in summary(seconds).items()}


# --- rebuild --------------------------------------------------------------------------------------


async def _produce(bootstrap: str, topic: str, changes: list[StateChange]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    try:
        pending = []
        for change in changes:
            pending.append(await producer.send(topic, value=change.value, key=change.key.encode()))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def _delete_topics(bootstrap: str, topics: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(topics)
    finally:
        await admin.close()


async def rebuild_child(bootstrap: str, topic: str) -> dict[str, Any]:
    """Runs in a fresh interpreter: the daemon's start-up read of the state topic, timed."""
    gc.collect()
    rss_before = rss_bytes()
    state = DesiredState()
    reader = StateTopicReader(KafkaSettings(bootstrap=bootstrap, state_topic=topic), state)
    started = time.perf_counter()
    await reader.start()
    records = await reader.catch_up()
    seconds = time.perf_counter() - started
    rss_loaded = rss_bytes()
    await reader.stop()
    gc.collect()
    return {
        "records": records,
        "volumes": len(state.volumes),
        "seconds": seconds,
        "rss_before": rss_before,
        "rss_loaded": rss_loaded,
        "rss_after_stop": rss_bytes(),
        "peak_rss": peak_rss_bytes(),
    }


def measure_rebuild(args: argparse.Namespace, report: Report, bootstrap: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    topology = make_cluster(args.rebuild_nodes, args.devices, args.zones)
    for volumes in args.rebuild:
        prefix = f"bench{uuid.uuid4().hex[:8]}"
        settings = KafkaSettings(
            bootstrap=bootstrap,
            requests_topic=f"{prefix}.requests",
            results_topic=f"{prefix}.results",
            state_topic=f"{prefix}.state",
            dlq_topic=f"{prefix}.dlq",
        )
        changes = [
            StateChange.put_cluster(topology),
            *(StateChange.put_volume(v) for v in existing_volumes(topology, volumes)),
        ]
        try:
            asyncio.run(ensure_topics(settings))
            with Stopwatch() as produced:
                asyncio.run(_produce(bootstrap, settings.state_topic, changes))
            print(
                f"  {volumes} volume records written to {settings.state_topic} in {produced.seconds:.1f}s", flush=True
            )
            load = loadavg()
            child = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.scale",
                    "--rebuild-child",
                    settings.state_topic,
                    "--bootstrap",
                    bootstrap,
                ],
                cwd=REPO,
                capture_output=True,
                text=True,
                check=False,
            )
            if child.returncode != 0:
                raise RuntimeError(f"rebuild child failed:\n{child.stderr[-3000:]}")
            measured = json.loads(child.stdout.strip().splitlines()[-1])
        finally:
            asyncio.run(
                _delete_topics(
                    bootstrap,
                    [settings.requests_topic, settings.results_topic, settings.state_topic, settings.dlq_topic],
                )
            )
        # The same records applied without Kafka: the decode-and-apply share of the rebuild.
        state = DesiredState()
        gc.collect()
        with Stopwatch() as applied:
            for change in changes:
                state.apply(change)
        del state, changes
        gc.collect()
        retained = measured["rss_after_stop"] - measured["rss_before"]
        row = {
            "volumes": volumes,
            "records_read": measured["records"],
            "volumes_rebuilt": measured["volumes"],
            "rebuild_seconds": measured["seconds"],
            "volumes_per_second": measured["volumes"] / measured["seconds"],
            "apply_only_seconds": applied.seconds,
            "rss_per_volume_bytes": retained / volumes,
            "rss_while_reading_per_volume_bytes": (measured["rss_loaded"] - measured["rss_before"]) / volumes,
            "peak_rss_bytes": measured["peak_rss"],
            "write_seconds": produced.seconds,
            "loadavg": load,
        }
        rows.append(row)
        print(
            f"  rebuilt {measured['volumes']} volumes in {row['rebuild_seconds']:.1f}s, "
            f"{row['rss_per_volume_bytes']:.0f} B/volume resident",
            flush=True,
        )
    report.data["rebuild"] = rows
    return rows


# --- entry point ----------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    return [int(x.replace("_", "")) for x in text.split(",") if x.strip() and int(x.replace("_", "")) > 0]


def _existing(text: str) -> list[int]:
    return sorted({int(x.replace("_", "")) for x in text.split(",") if x.strip()})


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--nodes", type=_ints, default=[100, 1000, 10000], help="topology sizes (default 100,1000,10000)"
    )
    parser.add_argument("--devices", type=int, default=10, help="devices per node (default 10, 16 TiB each)")
    parser.add_argument("--zones", type=int, default=3, help="zones, nodes assigned round robin (default 3)")
    parser.add_argument(
        "--existing", type=_existing, default=[0, 10_000, 100_000], help="existing volumes (default 0,10000,100000)"
    )
    parser.add_argument("--place", type=int, default=300, help="new volumes placed per configuration (default 300)")
    parser.add_argument(
        "--check", type=int, default=10, help="of those, how many to check against the brute-force rule (default 10)"
    )
    parser.add_argument(
        "--rebuild",
        type=_ints,
        default=[10_000, 100_000],
        help="volumes in the state topic to rebuild from; 0 skips (default 10000,100000)",
    )
    parser.add_argument(
        "--rebuild-nodes",
        type=int,
        default=100,
        help="nodes of the rebuilt cluster (default 100: a cluster record must fit in one Kafka message)",
    )
    parser.add_argument("--bootstrap", help="Kafka (default: the local stack's, from .dev/provisioner.env)")
    parser.add_argument("--rebuild-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # leader elections of the fresh topics are retried

    if args.rebuild_child:
        print(json.dumps(asyncio.run(rebuild_child(args.bootstrap, args.rebuild_child))))
        return 0

    report = Report("scale")
    report.data["parameters"] = {k: v for k, v in vars(args).items() if k != "rebuild_child"}
    placement = measure_placement(args, report) if args.place > 0 else []
    rebuild: list[dict[str, Any]] = []
    if args.rebuild:
        bootstrap = args.bootstrap
        if bootstrap is None:
            from devstack.stack import load_stack

            bootstrap = load_stack().bootstrap
        rebuild = measure_rebuild(args, report, bootstrap)

    print(
        f"\nPlacement: replica 3, 1 GiB, {args.zones} zones, {args.devices} devices per node; milliseconds "
        "(first = builds the index; then wall time per placement, and CPU time, which leaves out being descheduled)"
    )
    print(
        table(
            (
                "nodes",
                "devices",
                "existing",
                "first",
                "mean",
                "p50",
                "p95",
                "p99",
                "max",
                "cpu mean",
                "cpu p99",
                "apply p50",
                "reference",
            ),
            [
                (
                    r["nodes"],
                    r["devices"],
                    r["existing_volumes"],
                    r["first_placement_ms"],
                    r["placement_ms"]["mean"],
                    r["placement_ms"]["p50"],
                    r["placement_ms"]["p95"],
                    r["placement_ms"]["p99"],
                    r["placement_ms"]["max"],
                    r["placement_cpu_ms"]["mean"],
                    r["placement_cpu_ms"]["p99"],
                    r["apply_ms"]["p50"],
                    f"{r['agreed_with_reference']}/{r['checked_against_reference']}",
                )
                for r in placement
            ],
        )
    )
    if rebuild:
        print(f"\nState rebuild from the state topic on the real broker ({args.rebuild_nodes}-node cluster)")
        print(
            table(
                ("volumes", "seconds", "volumes/s", "decode+apply s", "RSS B/volume", "peak RSS MiB"),
                [
                    (
                        r["volumes"],
                        r["rebuild_seconds"],
                        r["volumes_per_second"],
                        r["apply_only_seconds"],
                        r["rss_per_volume_bytes"],
                        r["peak_rss_bytes"] / 1024**2,
                    )
                    for r in rebuild
                ],
            )
        )

    worst = [r for r in placement if r["nodes"] == 10_000 and r["existing_volumes"] == 100_000]
    if worst:
        report.target(
            "placement per volume (mean wall), 10,000 nodes x 10 devices, 100,000 volumes",
            measured=round(worst[0]["placement_ms"]["mean"], 3),
            limit=2.0,
            unit="ms",
        )
    big = [r for r in rebuild if r["volumes"] == 100_000]
    if big:
        report.target(
            "state rebuild of 100,000 volumes", measured=round(big[0]["rebuild_seconds"], 2), limit=15.0, unit="s"
        )
        report.target(
            "resident memory per volume at 100,000 volumes",
            measured=round(big[0]["rss_per_volume_bytes"]),
            limit=4096,
            unit="B",
        )
    if placement:
        agreed = all(r["agreed_with_reference"] == r["checked_against_reference"] for r in placement)
        report.data["all_placements_agree_with_reference"] = agreed
    if report.targets:
        print("\n" + report.targets_table())
    print(f"\nload average {report.data['load_before']} -> {loadavg()}; written {report.save().relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
