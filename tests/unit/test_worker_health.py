"""Placement around down nodes: what fits on the nodes that are up succeeds, what only the down
nodes could hold fails with reason NodeDown naming them and why, and work resumes once they are up."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from provisioner.domain import VolumeStatus
from provisioner.events import catalog, models, results
from provisioner.events.envelope import new_event
from provisioner.executor import Argv, CommandResult
from provisioner.planning.placement import NothingDown
from tests import fakes
from tests.fakes import failure as failed
from tests.fakes import provisioned, xml

GiB = 1024**3
GLUSTERD = "glusterd not answering: Connection failed. Please check if gluster daemon is operational."


class FakeHealth:
    """The worker's view of node health: ``hosts`` are down, with their reasons."""

    def __init__(self) -> None:
        self.hosts: dict[str, str] = {}

    def down(self, cluster: str) -> Mapping[str, str]:
        return dict(self.hosts) if cluster == "dev" else {}


def node(i: int, *, zone: int = 1, capacity: int = 100 * GiB) -> dict[str, Any]:
    return {
        "node": {"hostnames": {"manage": [f"10.0.0.{i}"], "storage": [f"10.0.0.{i}"]}, "zone": zone},
        "devices": [{"name": "/srv/devices/dev1", "backend": "file", "capacity": capacity}],
    }


class World(fakes.World):
    """The handler with a health view whose down nodes the tests set (``health.hosts``)."""

    def __init__(self, *nodes: dict[str, Any]) -> None:
        self.health = FakeHealth()
        nodes = nodes or tuple(node(i) for i in (1, 2, 3))
        super().__init__(
            topology=models.LoadTopology.model_validate({"cluster": "dev", "nodes": list(nodes)}), health=self.health
        )


async def test_replica_three_with_a_node_down_fails_naming_it_and_touches_nothing() -> None:
    world = World()
    await world.load()
    world.health.hosts = {"10.0.0.3": GLUSTERD}
    failure = failed(await world.provision(name="r3"))
    assert failure.reason == "NodeDown"
    assert failure.message == f"replica 3 needs 3 nodes, 2 are up; down: 10.0.0.3 ({GLUSTERD})"
    assert failure.retriable, "the node may come back"
    assert world.nodes.calls == [] and world.intent.recorded == [] and world.state.volumes == {}


async def test_what_fits_on_the_nodes_that_are_up_succeeds_there() -> None:
    world = World()
    await world.load()
    world.health.hosts = {"10.0.0.3": GLUSTERD}
    two = provisioned(await world.provision(name="r2", durability={"type": "replicate", "replica": 2}))
    assert sorted(b.host for b in two.bricks) == ["10.0.0.1", "10.0.0.2"]
    plain = provisioned(await world.provision(name="d", size=3 * GiB, durability={"type": "none"}))
    assert {b.host for b in plain.bricks} <= {"10.0.0.1", "10.0.0.2"}
    assert all(host != "10.0.0.3" for host, _ in world.nodes.calls)


async def test_work_resumes_when_the_node_is_up_again() -> None:
    world = World()
    await world.load()
    world.health.hosts = {"10.0.0.3": "unreachable over SSH: ConnectionRefusedError"}
    assert failed(await world.provision(name="first")).reason == "NodeDown"
    world.health.hosts = {}
    volume = provisioned(await world.provision(name="second"))
    assert sorted(b.host for b in volume.bricks) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


async def test_a_request_the_whole_cluster_could_not_hold_keeps_its_own_reason() -> None:
    world = World()
    await world.load()
    world.health.hosts = {"10.0.0.3": GLUSTERD}
    failure = failed(await world.provision(name="r4", durability={"type": "replicate", "replica": 4}))
    assert failure.reason == "NotEnoughNodes"
    assert "down" not in failure.message


async def test_every_down_node_is_named_with_its_reason() -> None:
    world = World(*(node(i) for i in (1, 2, 3, 4)))
    await world.load()
    world.health.hosts = {"10.0.0.4": "unreachable over SSH: timed out", "10.0.0.2": GLUSTERD}
    failure = failed(await world.provision(name="two-down"))
    assert failure.reason == "NodeDown"
    assert failure.message == (
        f"replica 3 needs 3 nodes, 2 are up; down: 10.0.0.2 ({GLUSTERD}), 10.0.0.4 (unreachable over SSH: timed out)"
    )


async def test_strict_zones_that_only_a_down_node_completes() -> None:
    world = World(node(1, zone=1), node(2, zone=2), node(3, zone=3), node(4, zone=3))
    await world.load()
    world.health.hosts = {"10.0.0.1": GLUSTERD}
    failure = failed(await world.provision(name="z", zone_checking="strict"))
    assert failure.reason == "NodeDown"
    assert failure.message.startswith("replica 3 with strict zone checking needs 3 zones, 2 have a node up; down:")
    world.health.hosts = {"10.0.0.4": GLUSTERD}  # zone 3 still has a node up
    assert provisioned(await world.provision(name="z2", zone_checking="strict"))


async def test_space_that_only_a_down_node_has() -> None:
    world = World(node(1), node(2), node(3), node(4, capacity=2 * GiB))
    await world.load()
    world.health.hosts = {"10.0.0.3": GLUSTERD}
    failure = failed(await world.provision(name="big", size=50 * GiB))
    assert failure.reason == "NodeDown"
    assert failure.message.startswith("no device with")
    assert failure.message.endswith(f"(on the nodes that are up); down: 10.0.0.3 ({GLUSTERD})")
    world.health.hosts = {}
    assert provisioned(await world.provision(name="big", size=50 * GiB))


async def test_expansion_avoids_down_nodes_and_names_them_when_it_cannot() -> None:
    world = World(*(node(i) for i in (1, 2, 3, 4)))
    await world.load()
    provisioned(await world.provision(name="grow"))
    world.health.hosts = {"10.0.0.4": GLUSTERD}
    grow = models.ExpandVolume(cluster="dev", name="grow", size=2 * GiB)
    expanded = await world.handle(new_event(catalog.EXPAND_REQUESTED, grow, source="/t"))
    assert isinstance(expanded.result.data, results.VolumeExpanded), expanded.result.data
    added = expanded.result.data.volume.bricks[3:]
    assert len(added) == 3 and all(b.host != "10.0.0.4" for b in added)

    world.health.hosts = {"10.0.0.4": GLUSTERD, "10.0.0.1": "unreachable over SSH: refused"}
    more = models.ExpandVolume(cluster="dev", name="grow", size=3 * GiB)
    failure = failed(await world.handle(new_event(catalog.EXPAND_REQUESTED, more, source="/t")))
    assert failure.reason == "NodeDown"
    assert "10.0.0.1 (unreachable over SSH: refused), 10.0.0.4" in failure.message
    [volume] = world.state.volumes.values()
    assert volume.status is VolumeStatus.ONLINE and len(volume.bricks) == 6


async def test_an_existing_volume_on_a_down_node_fails_temporarily_naming_it() -> None:
    world = World()
    await world.load()
    provisioned(await world.provision(name="old"))
    world.health.hosts = {"10.0.0.3": GLUSTERD}

    def peers_down(host: str, argv: Argv) -> CommandResult | None:
        if "delete" in argv:
            return CommandResult(host, argv, 0, xml(-1, "volume delete: old: failed: Some of the peers are down"), "")
        return None

    world.nodes.faults.append(peers_down)
    delete = models.DeleteVolume(cluster="dev", name="old")
    failure = failed(await world.handle(new_event(catalog.DELETE_REQUESTED, delete, source="/t")))
    assert failure.reason == "NodeUnreachable" and failure.retriable
    assert failure.message.endswith(f"Some of the peers are down; nodes down: 10.0.0.3 ({GLUSTERD})")


async def test_without_a_health_view_nothing_is_down() -> None:
    assert NothingDown().down("dev") == {}
    world = fakes.World()  # no health view given
    await world.load()
    assert provisioned(await world.provision(name="plain"))
