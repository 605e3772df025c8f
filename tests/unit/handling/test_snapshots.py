"""Snapshot and clone requests against the fake nodes: records first, gluster's snapshot, clone bricks
as thin snapshots in the origin's pools, refusals before anything runs, rollback."""

from __future__ import annotations

from provisioner.domain import ClusterId, SnapshotStatus, Volume, VolumeStatus
from provisioner.errors import GlusterError
from provisioner.events import catalog, models, results
from provisioner.events.envelope import Event, new_event
from provisioner.executor import Argv
from tests.fakes import FakeSnapshot, World, default_topology, failure

GiB = 1024**3
DEV = ClusterId("dev")


def lvm_world() -> World:
    topology = models.LoadTopology.model_validate(
        {
            "cluster": "dev",
            "nodes": [
                {
                    "node": {"hostnames": {"manage": [f"10.0.0.{i}"], "storage": [f"10.0.0.{i}"]}},
                    "devices": [{"name": "/dev/vdb"}],
                }
                for i in range(1, 4)
            ],
        }
    )
    return World(topology=topology)


async def ready(world: World, name: str = "v1") -> Volume:
    await world.load()
    made = await world.provision(name=name, size=GiB)
    assert made.result.type.endswith("succeeded.v1"), made.result.data
    volume = world.state.volume_named(DEV, name)
    assert volume is not None
    return volume


def snapshot(volume: str = "v1", name: str = "monday") -> Event:
    return new_event(
        catalog.SNAPSHOT_CREATE_REQUESTED, models.CreateSnapshot(cluster="dev", volume=volume, name=name), source="/t"
    )


async def test_a_snapshot_is_recorded_before_gluster_takes_it_and_answered_once() -> None:
    world = lvm_world()
    volume = await ready(world)
    request = snapshot()
    taken = await world.handle(request)
    assert isinstance(taken.result.data, results.SnapshotCreated), taken.result.data
    out = taken.result.data.snapshot
    assert (out.name, out.volume, out.volume_id) == ("monday", "v1", volume.id)
    assert [c.key for c in world.intent.recorded][-1] == f"snapshot/{out.snapshot_id}", "intent before gluster"
    assert world.state.snapshots[out.snapshot_id].status is SnapshotStatus.ONLINE  # type: ignore[index]
    assert world.nodes.snapshots["monday"].description == f"provisioner:{out.snapshot_id}"
    calls = len(world.nodes.calls)
    again = await world.handle(request)
    assert again.result.data == taken.result.data.model_copy(update={"request_id": request.id})
    assert not [argv for _, argv in world.nodes.calls[calls:] if "create" in argv], "no second snapshot"


async def test_a_snapshot_of_a_file_backend_volume_is_refused_naming_its_devices() -> None:
    world = World(topology=default_topology(3))
    await ready(world)
    world.nodes.calls.clear()
    refused = await world.handle(snapshot())
    assert failure(refused).reason == "SnapshotUnsupported"
    assert "10.0.0.1:/srv/devices/dev1" in failure(refused).message and "thin LV" in failure(refused).message
    assert world.nodes.calls == [] and world.state.snapshots == {}


async def test_a_snapshot_name_held_by_someone_else_is_never_taken_or_deleted() -> None:
    world = lvm_world()
    await ready(world)
    world.nodes.snapshots["monday"] = FakeSnapshot("v1", "made by hand", "f" * 32)
    refused = await world.handle(snapshot())
    assert failure(refused).reason == "SnapshotNameTaken"
    assert world.nodes.snapshots["monday"].description == "made by hand"
    assert world.state.snapshots == {}


async def test_delete_list_and_a_volume_that_keeps_its_snapshots() -> None:
    world = lvm_world()
    await ready(world)
    await world.handle(snapshot(name="monday"))
    await world.handle(snapshot(name="tuesday"))
    listing = await world.handle(
        new_event(catalog.SNAPSHOT_LIST_REQUESTED, models.ListSnapshots(cluster="dev"), source="/t")
    )
    assert isinstance(listing.result.data, results.SnapshotsListed)
    assert [s.name for s in listing.result.data.snapshots] == ["monday", "tuesday"]
    refused = await world.delete(name="v1")
    assert failure(refused).reason == "VolumeHasSnapshots" and "monday, tuesday" in failure(refused).message
    for name in ("monday", "tuesday"):
        drop = models.DeleteSnapshot(cluster="dev", name=name)
        gone = await world.handle(new_event(catalog.SNAPSHOT_DELETE_REQUESTED, drop, source="/t"))
        assert isinstance(gone.result.data, results.SnapshotDeleted) and gone.result.data.existed
    again = await world.handle(new_event(catalog.SNAPSHOT_DELETE_REQUESTED, drop, source="/t"))
    assert isinstance(again.result.data, results.SnapshotDeleted) and not again.result.data.existed
    assert world.nodes.snapshots == {} and world.state.snapshots == {}
    assert (await world.delete(name="v1")).result.type.endswith("succeeded.v1")


def clone(**source: str) -> Event:
    data = models.CloneVolume.model_validate({"cluster": "dev", "name": "copy", **source})
    return new_event(catalog.CLONE_REQUESTED, data, source="/t")


async def test_a_clone_of_a_snapshot_is_a_volume_of_ours_in_the_origins_pools() -> None:
    world = lvm_world()
    origin = await ready(world)
    await world.handle(snapshot())
    made = await world.handle(clone(from_snapshot="monday"))
    assert isinstance(made.result.data, results.VolumeCloned), made.result.data
    copy = world.state.volume_named(DEV, "copy")
    assert copy is not None and copy.status is VolumeStatus.ONLINE and copy.id != origin.id
    assert [(b.node, b.device, b.pool) for b in copy.bricks] == [(b.node, b.device, b.id) for b in origin.bricks]
    assert {b.id for b in copy.bricks}.isdisjoint(b.id for b in origin.bricks)
    assert world.state.usage(DEV) == {b.device: GiB for b in origin.bricks}, "a clone takes no room until written"
    for brick in copy.bricks:  # a thin snapshot of the gluster snapshot's LV of the origin brick
        host = world.state.require_cluster("dev").node(brick.node).manage
        vg = f"vg_{brick.device}"
        assert world.nodes.thin[(host, f"{vg}/brick_{brick.id}")] == f"tp_{brick.pool}"
        assert world.nodes.origins[(host, f"{vg}/brick_{brick.id}")].startswith(world.nodes.snapshots["monday"].volume)
    gluster = world.nodes.volumes["copy"]
    assert gluster.started and gluster.options["user.provisioner.id"] == copy.id
    assert {x for _, _, x in world.nodes.stripped} == {"trusted.glusterfs.volume-id", "trusted.gfid"}
    assert world.nodes.snapshots.keys() == {"monday"}, "a clone of a snapshot leaves it"

    deleted = await world.delete(name="copy")
    assert deleted.result.type.endswith("succeeded.v1")
    cluster = world.state.require_cluster("dev")
    for brick in copy.bricks:
        host, vg = cluster.node(brick.node).manage, f"vg_{brick.device}"
        assert (host, f"{vg}/brick_{brick.id}") not in world.nodes.thin, "the clone's LV is gone"
        assert (host, f"{vg}/tp_{brick.pool}") in world.nodes.thin, "the origin's pool stays with the origin"


async def test_a_clone_of_a_volume_takes_a_passing_snapshot_and_a_failed_clone_leaves_nothing() -> None:
    world = lvm_world()
    await ready(world)
    made = await world.handle(clone(from_volume="v1"))
    assert isinstance(made.result.data, results.VolumeCloned), made.result.data
    assert made.result.data.from_snapshot.startswith("clone_")
    assert world.nodes.snapshots == {}, "the passing snapshot is gone"

    def broken(host: str, argv: Argv) -> GlusterError | None:
        return GlusterError("disk on fire") if argv[4:6] == ("volume", "create") and "again" in argv else None

    world.nodes.faults.append(broken)
    before = dict(world.nodes.thin)
    event = new_event(
        catalog.CLONE_REQUESTED, models.CloneVolume(cluster="dev", name="again", from_volume="v1"), source="/t"
    )
    failed = await world.handle(event)
    assert failure(failed).reason == "GlusterFailed"
    assert world.state.volume_named(DEV, "again") is None
    assert world.nodes.thin == before and world.nodes.snapshots == {}, "its bricks and its snapshot are gone"
