"""The worker against a fake node cluster: lifecycle, idempotency, rollback, retries, conflicts."""

from __future__ import annotations

import pytest

from provisioner.bus.records import Records, Topics
from provisioner.delivery.outcome import Outcome
from provisioner.domain import VolumeId, VolumeStatus
from provisioner.errors import HostKeyRejected, NodeUnreachable
from provisioner.events import catalog, models, results
from provisioner.events.envelope import Event, new_event
from provisioner.events.models import MESSAGE_LIMIT
from provisioner.executor import Argv, CommandResult
from tests.fakes import FakeVolume, World, default_topology, failure, provisioned, xml

GiB = 1024**3


async def test_provision_then_delete_leaves_nothing() -> None:
    world = World()
    assert (await world.load()).result.type == catalog.succeeded_type(catalog.TOPOLOGY_LOAD_REQUESTED)
    outcome = await world.provision(name="v1", gid=2001)
    assert outcome.result.type == catalog.succeeded_type(catalog.PROVISION_REQUESTED)
    data = outcome.result.data
    assert isinstance(data, results.VolumeProvisioned)
    assert len({b.host for b in data.volume.bricks}) == 3
    assert world.nodes.volumes["v1"].started
    assert world.nodes.volumes["v1"].options["user.provisioner.id"] == data.volume.volume_id
    assert len(world.nodes.mounts) == 3
    assert world.intent.recorded[0].key == f"volume/{data.volume.volume_id}"  # intent before node work
    [progress] = world.intent.progress_events
    assert progress.type == "org.gluster.volume.provision.progressed.v1"
    assert isinstance(progress.data, results.Progress) and progress.data.step == "bricks_ready"
    assert world.state.volumes[VolumeId(data.volume.volume_id)].status is VolumeStatus.ONLINE

    deleted = await world.delete(name="v1")
    assert isinstance(deleted.result.data, results.VolumeDeleted) and deleted.result.data.existed
    assert world.nodes.volumes == {} and world.nodes.mounts == {} and world.nodes.files == set()
    assert world.state.volumes == {}


async def test_unknown_cluster_fails_with_reason() -> None:
    outcome = await World().provision()
    assert isinstance(outcome.result.data, results.RequestFailed)
    assert outcome.result.data.reason == "UnknownCluster"


async def test_two_nodes_fail_with_not_enough_nodes() -> None:
    world = World(nodes=2)
    await world.load()
    outcome = await world.provision()
    assert isinstance(outcome.result.data, results.RequestFailed)
    assert outcome.result.data.reason == "NotEnoughNodes"
    assert world.nodes.calls == []  # nothing touched a node


async def test_gluster_failure_rolls_back_every_brick() -> None:
    world = World()
    await world.load()

    def refuse_create(host: str, argv: Argv) -> CommandResult | None:
        if "create" in argv:
            return CommandResult(host, argv, 0, xml(-1, "Staging failed on 10.0.0.3. Error: disk on fire"), "")
        return None

    world.nodes.faults.append(refuse_create)
    outcome = await world.provision(name="v2")
    assert isinstance(outcome.result.data, results.RequestFailed)
    assert outcome.result.data.reason == "GlusterFailed"
    assert "disk on fire" in outcome.result.data.message
    assert world.nodes.mounts == {} and world.nodes.files == set()
    assert world.state.volumes == {}


async def test_a_huge_node_error_gives_a_bounded_result_that_can_be_published() -> None:
    """2 MB of stderr from a node made a result over the broker's limit; the lane broke on it and each
    retry re-ran the whole provision on the nodes. The result keeps a bounded head of the text."""
    world = World()
    await world.load()

    def flood(host: str, argv: Argv) -> CommandResult | None:
        if "create" in argv:
            return CommandResult(host, argv, 1, "", "disk on fire " + "x" * 2_000_000)
        return None

    world.nodes.faults.append(flood)
    outcome = await world.provision(name="v2")
    assert isinstance(outcome.result.data, results.RequestFailed)
    assert "disk on fire" in outcome.result.data.message
    assert len(outcome.result.data.message) <= MESSAGE_LIMIT
    record = Records(Topics(results="results", state="state", dlq="dlq")).result(outcome)
    assert record.size < 64 * 1024
    assert world.nodes.mounts == {} and world.state.volumes == {}


async def test_busy_gluster_is_retried() -> None:
    world = World()
    await world.load()
    busy = {"left": 3}

    def busy_twice(host: str, argv: Argv) -> CommandResult | None:
        if "start" in argv and busy["left"]:
            busy["left"] -= 1
            return CommandResult(host, argv, 0, xml(-1, "Another transaction is in progress for v3."), "")
        return None

    world.nodes.faults.append(busy_twice)
    outcome = await world.provision(name="v3")
    assert outcome.result.type.endswith("succeeded.v1")
    assert busy["left"] == 0


async def test_unreachable_node_fails_temporarily_then_rolls_back() -> None:
    world = World()
    await world.load()

    def down(host: str, argv: Argv) -> Exception | None:
        return NodeUnreachable(host, "connection refused") if host == "10.0.0.2" else None

    world.nodes.faults.append(down)
    outcome = await world.provision(name="v4")
    assert isinstance(outcome.result.data, results.RequestFailed)
    assert outcome.result.data.reason == "NodeUnreachable"
    assert outcome.result.data.retriable
    assert "10.0.0.2" in outcome.result.data.message
    # bricks on the reachable nodes were removed; the record stays because 10.0.0.2 could not be cleaned
    assert all(host == "10.0.0.2" for host, _ in world.nodes.mounts)
    assert any(v.status is VolumeStatus.CREATING for v in world.state.volumes.values())


async def test_same_request_twice_gives_the_same_volume() -> None:
    world = World()
    await world.load()
    data = models.ProvisionVolume(cluster="dev", size=GiB, name="v5")
    event = new_event(catalog.PROVISION_REQUESTED, data, source="/t")
    first = await world.handle(event)
    second = await world.handle(event)
    assert isinstance(first.result.data, results.VolumeProvisioned)
    assert isinstance(second.result.data, results.VolumeProvisioned)
    assert first.result.data.volume == second.result.data.volume
    assert len(world.nodes.volumes) == 1


async def test_crash_after_intent_resumes_the_same_bricks() -> None:
    world = World()
    await world.load()
    data = models.ProvisionVolume(cluster="dev", size=GiB, name="v6")
    event = new_event(catalog.PROVISION_REQUESTED, data, source="/t")

    class Crash(BaseException):
        pass

    def crash_on_start(host: str, argv: Argv) -> BaseException | None:
        return Crash() if "start" in argv else None

    world.nodes.faults.append(crash_on_start)
    with pytest.raises(Crash):
        await world.handle(event)
    world.nodes.faults.clear()
    planned = next(iter(world.state.volumes.values()))
    assert planned.status is VolumeStatus.CREATING
    outcome = await world.handle(event)  # redelivery
    assert isinstance(outcome.result.data, results.VolumeProvisioned)
    assert [b.id for b in outcome.result.data.volume.bricks] == [b.id for b in planned.bricks]
    assert world.nodes.volumes["v6"].started


async def test_name_taken_by_someone_else_in_gluster() -> None:
    world = World()
    await world.load()
    world.nodes.volumes["taken"] = FakeVolume(bricks=["10.0.0.9:/b"], options={"user.provisioner.id": "f" * 32})
    outcome = await world.provision(name="taken")
    assert isinstance(outcome.result.data, results.RequestFailed)
    assert outcome.result.data.reason == "VolumeNameTaken"
    assert world.nodes.volumes["taken"].options["user.provisioner.id"] == "f" * 32  # untouched


async def test_delete_of_unknown_volume_succeeds_as_nothing_to_do() -> None:
    world = World()
    await world.load()
    outcome = await world.delete(name="ghost")
    assert isinstance(outcome.result.data, results.VolumeDeleted)
    assert not outcome.result.data.existed


async def test_topology_cannot_drop_a_device_in_use() -> None:
    world = World(nodes=4)
    await world.load()
    await world.provision(name="v7")
    world.topology = default_topology(nodes=2)
    outcome = await world.load()
    assert isinstance(outcome.result.data, results.RequestFailed)
    assert outcome.result.data.reason == "DeviceInUse"


async def test_expand_adds_whole_sets_and_is_idempotent() -> None:
    world = World(nodes=4)
    await world.load()
    await world.provision(name="grow")
    data = models.ExpandVolume(cluster="dev", name="grow", size=3 * GiB)
    first = await world.handle(new_event(catalog.EXPAND_REQUESTED, data, source="/t"))
    assert isinstance(first.result.data, results.VolumeExpanded), first.result.data
    assert first.result.data.added_bricks == 6
    assert len(world.nodes.volumes["grow"].bricks) == 9
    volume = first.result.data.volume
    for set_index in range(3):
        hosts = [b.host for b in volume.bricks[set_index * 3 : set_index * 3 + 3]]
        assert len(set(hosts)) == 3, "no two bricks of a set on one node"
    again = await world.handle(new_event(catalog.EXPAND_REQUESTED, data, source="/t"))
    assert isinstance(again.result.data, results.VolumeExpanded) and again.result.data.added_bricks == 0
    deleted = await world.delete(name="grow")
    assert isinstance(deleted.result.data, results.VolumeDeleted)
    assert world.nodes.mounts == {} and world.nodes.files == set()


async def test_expand_of_unknown_volume_fails_with_reason() -> None:
    world = World()
    await world.load()
    data = models.ExpandVolume(cluster="dev", name="ghost", size=3 * GiB)
    outcome = await world.handle(new_event(catalog.EXPAND_REQUESTED, data, source="/t"))
    assert isinstance(outcome.result.data, results.RequestFailed)
    assert outcome.result.data.reason == "VolumeNotFound"


async def change(world: World, type_: str, data: models.Model) -> Outcome:
    return await world.handle(new_event(type_, data, source="/t"))


async def test_node_add_probes_and_remove_detaches() -> None:
    world = World(nodes=2)
    await world.load()
    third = default_topology(3).nodes[2]
    added = await change(world, catalog.NODE_ADD_REQUESTED, models.AddNode(cluster="dev", node=third))
    assert isinstance(added.result.data, results.TopologyLoaded) and added.result.data.nodes == 3
    assert world.nodes.peers == {"10.0.0.2", "10.0.0.3"}  # the load probed the second node
    assert ("10.0.0.3", ("mkdir", "-p", "--", "/srv/devices/dev1")) in world.nodes.calls
    assert (await world.provision(name="three")).result.type.endswith("succeeded.v1")  # now 3 nodes
    refused = await change(world, catalog.NODE_REMOVE_REQUESTED, models.NodeRef(cluster="dev", host="10.0.0.3"))
    assert isinstance(refused.result.data, results.RequestFailed) and refused.result.data.reason == "DeviceInUse"
    await world.delete(name="three")
    removed = await change(world, catalog.NODE_REMOVE_REQUESTED, models.NodeRef(cluster="dev", host="10.0.0.3"))
    assert isinstance(removed.result.data, results.TopologyLoaded) and removed.result.data.nodes == 2
    assert world.nodes.peers == {"10.0.0.2"}


async def test_a_node_whose_host_key_fails_never_joins_the_pool() -> None:
    world = World(nodes=2)
    await world.load()
    third = default_topology(3).nodes[2]

    def impostor(host: str, argv: Argv) -> HostKeyRejected | None:
        return HostKeyRejected(host, "host key mismatch") if host == "10.0.0.3" else None

    world.nodes.faults.append(impostor)
    added = await change(world, catalog.NODE_ADD_REQUESTED, models.AddNode(cluster="dev", node=third))
    assert failure(added).reason == "HostKeyRejected"
    assert world.nodes.peers == {"10.0.0.2"}, "no member was asked to peer-probe it"
    assert not [argv for _, argv in world.nodes.calls if "probe" in argv]
    assert len(world.state.require_cluster("dev").nodes) == 2


async def test_disabled_node_gets_no_bricks_until_enabled() -> None:
    world = World(nodes=3)
    await world.load()
    ref = models.NodeRef(cluster="dev", host="10.0.0.2")
    await change(world, catalog.NODE_DISABLE_REQUESTED, ref)
    failed = await world.provision(name="nope")
    assert isinstance(failed.result.data, results.RequestFailed) and failed.result.data.reason == "NotEnoughNodes"
    await change(world, catalog.NODE_ENABLE_REQUESTED, ref)
    assert (await world.provision(name="yes")).result.type.endswith("succeeded.v1")


async def test_device_add_and_remove() -> None:
    world = World(nodes=3)
    await world.load()
    device = models.TopologyDevice(name="/srv/devices/dev9", backend="file", capacity=10 * GiB)
    added = await change(
        world, catalog.DEVICE_ADD_REQUESTED, models.AddDevice(cluster="dev", host="10.0.0.1", device=device)
    )
    assert isinstance(added.result.data, results.TopologyLoaded) and added.result.data.devices == 4
    unknown = await change(
        world,
        catalog.DEVICE_REMOVE_REQUESTED,
        models.DeviceRef(cluster="dev", host="10.0.0.9", name="/srv/devices/dev9"),
    )
    assert isinstance(unknown.result.data, results.RequestFailed) and unknown.result.data.reason == "UnknownNode"
    removed = await change(
        world,
        catalog.DEVICE_REMOVE_REQUESTED,
        models.DeviceRef(cluster="dev", host="10.0.0.1", name="/srv/devices/dev9"),
    )
    assert isinstance(removed.result.data, results.TopologyLoaded) and removed.result.data.devices == 3


async def test_the_same_volume_id_under_another_name_is_a_conflict() -> None:
    world = World()
    await world.load()
    volume_id = "c" * 32
    assert provisioned(await world.provision(name="a", volume_id=volume_id)).name == "a"
    conflict = failure(await world.provision(name="b", volume_id=volume_id))
    assert conflict.reason == "VolumeConflict"
    assert list(world.nodes.volumes) == ["a"], "no second gluster volume for the same id"


async def test_one_volume_addressed_by_id_or_by_name_has_keys_in_common() -> None:
    """The lane runs requests whose keys meet in offset order: every address of a volume must meet."""
    world = World()
    await world.load()
    volume_id = "d" * 32
    keys = world.handler.keys_of

    def event(type_: str, data: models.Model) -> Event:
        return new_event(type_, data, source="/t")

    as_a = keys(
        event(
            catalog.PROVISION_REQUESTED, models.ProvisionVolume(cluster="dev", size=GiB, name="a", volume_id=volume_id)
        )
    )
    as_b = keys(
        event(
            catalog.PROVISION_REQUESTED, models.ProvisionVolume(cluster="dev", size=GiB, name="b", volume_id=volume_id)
        )
    )
    delete_by_id = keys(event(catalog.DELETE_REQUESTED, models.DeleteVolume(cluster="dev", volume_id=volume_id)))
    assert as_a and as_b and delete_by_id
    assert as_a & as_b and as_a & delete_by_id, "before the volume is in state"

    await world.provision(name="a", volume_id=volume_id)
    delete_by_name = keys(event(catalog.DELETE_REQUESTED, models.DeleteVolume(cluster="dev", name="a")))
    expand_by_id = keys(
        event(catalog.EXPAND_REQUESTED, models.ExpandVolume(cluster="dev", volume_id=volume_id, size=2 * GiB))
    )
    assert delete_by_name and expand_by_id
    assert delete_by_name & delete_by_id & expand_by_id & as_a, "once it is, every address meets on its id"
    unrelated = keys(event(catalog.PROVISION_REQUESTED, models.ProvisionVolume(cluster="dev", size=GiB, name="z")))
    assert unrelated and not unrelated & as_a


async def test_every_brick_filesystem_is_flushed_once_gluster_has_marked_it() -> None:
    """A power cut right after the answer must not lose the brick root's volume-id (glusterd would
    refuse to start the brick): each brick's filesystem is synced after volume start."""
    world = World()
    await world.load()
    await world.provision(name="v1")
    argvs = [argv for _, argv in world.nodes.calls]
    start = next(i for i, a in enumerate(argvs) if a[4:6] == ("volume", "start"))
    synced = [a[-1] for a in argvs[start:] if a[:2] == ("sync", "--file-system")]
    assert len(synced) == 3 and all(m.startswith("/var/lib/provisioner/mounts/vg_") for m in synced)
