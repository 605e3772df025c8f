"""What the command line prints: results, desired state and reconcile reports, as text or JSON."""

from __future__ import annotations

import dataclasses
import json

from provisioner.bus.state_topic import StateTopicReader
from provisioner.events import results
from provisioner.events.envelope import Event
from provisioner.reconcile import runs as reconciler
from provisioner.reconcile.drift import Drift
from provisioner.settings import Settings
from provisioner.state import DesiredState
from provisioner.units import format_size


def result(event: Event, *, as_json: bool) -> str:
    if as_json:
        return json.dumps({"type": event.type, "id": event.id, "data": event.data.model_dump(mode="json")}, indent=2)
    data = event.data
    match data:
        case results.VolumeProvisioned(volume=volume):
            lines = [
                f"provisioned {volume.name} ({volume.volume_id}) in cluster {volume.cluster}: "
                f"{format_size(volume.size)}, {volume.durability.type}",
                f"  mount: mount -t glusterfs -o backup-volfile-servers={':'.join(volume.backup_servers)} "
                f"{volume.mount} /mnt/{volume.name}",
            ]
            lines += [
                f"  brick {b.host}:{b.path} ({format_size(b.size)}{', arbiter' if b.arbiter else ''})"
                for b in volume.bricks
            ]
            return "\n".join(lines)
        case results.VolumeExpanded(volume=volume, added_bricks=added):
            return f"expanded {volume.name} to {format_size(volume.size)}: {added} brick(s) added, rebalance started"
        case results.VolumeDeleted():
            what = data.name or data.volume_id
            return f"deleted {what}" if data.existed else f"{what}: no such volume (nothing to delete)"
        case results.VolumeCloned(volume=volume):
            return (
                f"cloned {volume.name} ({volume.volume_id}) from snapshot {data.from_snapshot} of volume "
                f"{data.from_volume_id}: mount -t glusterfs {volume.mount} /mnt/{volume.name}"
            )
        case results.SnapshotCreated(snapshot=snapshot):
            return f"snapshot {snapshot.name} ({snapshot.snapshot_id}) of {snapshot.volume} taken"
        case results.SnapshotDeleted():
            what = data.name or data.snapshot_id
            return f"deleted snapshot {what}" if data.existed else f"{what}: no such snapshot (nothing to delete)"
        case results.SnapshotsListed(snapshots=snapshots):
            rows = [f"{s.name:<40} {s.volume:<40} {s.snapshot_id}" for s in snapshots]
            return "\n".join([f"{'SNAPSHOT':<40} {'VOLUME':<40} ID", *rows]) if rows else "no snapshots"
        case results.TopologyLoaded():
            return f"topology of cluster {data.cluster} now: {data.nodes} nodes, {data.devices} devices"
        case results.RequestFailed():
            return f"FAILED ({data.reason}): {data.message}"
    return repr(data)


async def state(settings: Settings, *, cluster: str | None, as_json: bool) -> str:
    state = DesiredState()
    reader = StateTopicReader(settings.kafka, state)
    await reader.start()
    try:
        await reader.catch_up()
    finally:
        await reader.stop()
    clusters = [c for c in state.clusters.values() if cluster in (None, c.id)]
    volumes = sorted((v for v in state.volumes.values() if cluster in (None, v.cluster)), key=lambda v: v.name)
    if as_json:
        return json.dumps(
            {
                "clusters": [dataclasses.asdict(c) for c in clusters],
                "volumes": [dataclasses.asdict(v) for v in volumes],
            },
            indent=2,
            default=str,
        )
    lines = [f"{'CLUSTER':<16} {'NODES':>5} {'DEVICES':>7} {'CAPACITY':>10} {'USED':>10}"]
    for c in clusters:
        devices = [d for n in c.nodes for d in n.devices]
        used = sum(state.usage(c.id).values())
        lines.append(
            f"{c.id:<16} {len(c.nodes):>5} {len(devices):>7} {format_size(sum(d.capacity for d in devices)):>10} "
            f"{format_size(used):>10}"
        )
    lines += ["", f"{'VOLUME':<24} {'CLUSTER':<16} {'STATUS':<9} {'SIZE':>8} {'DURABILITY':<12} {'BRICKS':>6}  ID"]
    for v in volumes:
        lines.append(
            f"{v.name:<24} {v.cluster:<16} {v.status.value:<9} {format_size(v.size):>8} {v.durability.type:<12} "
            f"{len(v.bricks):>6}  {v.id}"
        )
    return "\n".join(lines)


def report(report: reconciler.Report, *, as_json: bool) -> str:
    repaired = {id(d) for d in report.repaired}
    failures = {id(d): why for d, why in report.failed}

    def outcome(drift: Drift) -> str:
        if id(drift) in repaired:
            return "request sent" if drift.kind == "interrupted" else "repaired"
        return f"repair failed: {failures[id(drift)]}" if id(drift) in failures else ""

    if as_json:
        rows = [
            {
                "kind": d.kind,
                "cluster": d.cluster,
                "node": d.node,
                "subject": d.subject,
                "volume_id": d.volume_id,
                "detail": d.detail,
                "repairable": d.repairable,
                "outcome": outcome(d),
            }
            for d in report.drift
        ]
        return json.dumps({"drift": rows, "left": len(report.left), "unread": report.unread}, indent=2)
    unread = [f"NOT JUDGED: {what}" for what in report.unread]
    if not report.drift:
        return "\n".join(unread) if unread else "no drift: desired state and the nodes agree"
    lines = [f"{'KIND':<15} {'CLUSTER':<16} {'NODE':<15} {'SUBJECT':<34} DETAIL"]
    for d in report.drift:
        done = outcome(d)
        lines.append(
            f"{d.kind:<15} {d.cluster:<16} {d.node or '-':<15} {d.subject:<34} {d.detail}"
            + (f" [{done}]" if done else "")
        )
    lines.append(f"{len(report.drift)} found, {len(report.repaired)} repaired, {len(report.left)} left")
    return "\n".join([*lines, *unread])
