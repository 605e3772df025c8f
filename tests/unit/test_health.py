"""The node prober: one probe per host and round, down after failures in a row, up at the first success.

The probe's answers are what the real nodes print (tests/fixtures/gluster): ``pool list --xml`` of
a healthy node, and the plain text of a node whose glusterd is stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from provisioner.errors import CommandTimeout, NodeUnreachable, TemporaryError
from provisioner.events import models
from provisioner.executor import Argv, CommandResult
from provisioner.observe.health import PROBE, NodeHealth
from provisioner.observe.http import NodeCheck
from provisioner.planning.clusters import cluster_from
from provisioner.state import DesiredState, StateChange

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gluster"
REPO = Path(__file__).resolve().parents[2]
POOL_LIST = (FIXTURES / "pool-list.xml").read_text()
GLUSTERD_DOWN = (FIXTURES / "info-glusterd-down.txt").read_text()


class Nodes:
    """A fake executor answering the health probe; ``broken`` maps a host to how it fails."""

    def __init__(self) -> None:
        self.broken: dict[str, str] = {}
        self.ran: list[tuple[str, Argv]] = []

    async def run(self, host: str, argv: Argv, *, timeout: float, check: bool = True) -> CommandResult:
        self.ran.append((host, argv))
        match self.broken.get(host):
            case "sshd":
                raise NodeUnreachable(host, "ConnectionRefusedError: [Errno 111] Connect call failed")
            case "timeout":
                raise CommandTimeout(host, argv, timeout)
            case "glusterd":
                return CommandResult(host, argv, 1, GLUSTERD_DOWN, "")
            case "garbage":
                return CommandResult(host, argv, 0, "<cliOutput><opRet>", "")
        return CommandResult(host, argv, 0, POOL_LIST, "")

    async def close(self) -> None:
        return None


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def load(state: DesiredState, cluster: str, *, disabled: str | None = None) -> None:
    document = json.loads((REPO / "deploy" / "dev" / "topology.json").read_text())["clusters"][0]
    for node in document["nodes"]:
        node["node"]["enabled"] = node["node"]["hostnames"]["manage"][0] != disabled
    topology = models.LoadTopology.model_validate({"cluster": cluster, "nodes": document["nodes"]})
    state.apply(StateChange.put_cluster(cluster_from(topology)))


def node_up(cluster: str, node: str) -> float | None:
    return REGISTRY.get_sample_value("provisioner_node_up", {"cluster": cluster, "node": node})


@pytest.fixture
def world() -> tuple[DesiredState, Nodes, NodeHealth]:
    state = DesiredState()
    load(state, "h1")
    nodes = Nodes()
    return state, nodes, NodeHealth(state, nodes)


async def test_every_enabled_node_runs_the_one_probe(world: tuple[DesiredState, Nodes, NodeHealth]) -> None:
    _, nodes, health = world
    assert PROBE == ("gluster", "--mode=script", "--xml", "--timeout=5", "pool", "list")
    await health.probe_once()
    assert sorted(nodes.ran) == [(h, PROBE) for h in ("10.77.0.11", "10.77.0.12", "10.77.0.13")]
    assert health.down("h1") == {}
    assert health.nodes() == {("h1", h): None for h in ("10.77.0.11", "10.77.0.12", "10.77.0.13")}
    assert node_up("h1", "10.77.0.13") == 1


async def test_down_after_two_failures_in_a_row_and_up_at_the_first_success(
    world: tuple[DesiredState, Nodes, NodeHealth],
) -> None:
    _, nodes, health = world
    nodes.broken["10.77.0.13"] = "glusterd"
    await health.probe_once()
    assert health.down("h1") == {}, "one failed probe is not an outage"
    assert node_up("h1", "10.77.0.13") == 1

    await health.probe_once()
    reason = "glusterd not answering: Connection failed. Please check if gluster daemon is operational."
    assert health.down("h1") == {"10.77.0.13": reason}
    assert health.nodes()[("h1", "10.77.0.13")] == reason
    assert node_up("h1", "10.77.0.13") == 0
    assert node_up("h1", "10.77.0.12") == 1

    nodes.broken.clear()
    await health.probe_once()
    assert health.down("h1") == {}
    assert node_up("h1", "10.77.0.13") == 1

    nodes.broken["10.77.0.13"] = "glusterd"  # the count starts again after a success
    await health.probe_once()
    assert health.down("h1") == {}


async def test_a_success_between_failures_keeps_the_node_up(world: tuple[DesiredState, Nodes, NodeHealth]) -> None:
    _, nodes, health = world
    for broken in (True, False, True, False):
        nodes.broken = {"10.77.0.12": "sshd"} if broken else {}
        await health.probe_once()
        assert health.down("h1") == {}


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        ("sshd", "unreachable over SSH: ConnectionRefusedError: [Errno 111] Connect call failed"),
        ("timeout", "no answer within 8s"),
        ("glusterd", "glusterd not answering: Connection failed. Please check if gluster daemon is operational."),
        ("garbage", "glusterd not answering: unreadable output: "),
    ],
)
async def test_each_way_of_failing_has_its_reason(
    world: tuple[DesiredState, Nodes, NodeHealth], failure: str, reason: str
) -> None:
    _, nodes, health = world
    nodes.broken["10.77.0.11"] = failure
    await health.probe_once()
    await health.probe_once()
    assert health.down("h1")["10.77.0.11"].startswith(reason)


async def test_disabled_nodes_are_not_probed_and_shared_hosts_once_per_round() -> None:
    state = DesiredState()
    load(state, "a", disabled="10.77.0.13")
    load(state, "b")
    nodes = Nodes()
    nodes.broken["10.77.0.13"] = "sshd"
    health = NodeHealth(state, nodes, down_after=1)
    await health.probe_once()
    assert sorted(h for h, _ in nodes.ran) == ["10.77.0.11", "10.77.0.12", "10.77.0.13"]
    assert health.down("a") == {}, "a disabled node is not reported down"
    assert list(health.down("b")) == ["10.77.0.13"]
    assert node_up("a", "10.77.0.13") is None
    assert node_up("b", "10.77.0.13") == 0
    assert health.down("nosuch") == {}


async def test_a_node_that_leaves_the_topology_is_forgotten() -> None:
    state = DesiredState()
    load(state, "gone")
    nodes = Nodes()
    nodes.broken["10.77.0.11"] = "sshd"
    health = NodeHealth(state, nodes, down_after=1)
    await health.probe_once()
    assert node_up("gone", "10.77.0.11") == 0
    state.clusters.clear()
    await health.probe_once()
    assert health.nodes() == {}
    assert node_up("gone", "10.77.0.11") is None
    load(state, "gone")
    nodes.broken.clear()
    await health.probe_once()
    assert health.down("gone") == {}


async def test_the_readiness_check_reads_the_last_round() -> None:
    state = DesiredState()
    load(state, "r")
    nodes = Nodes()
    clock = Clock()
    health = NodeHealth(state, nodes, interval=5, down_after=1, clock=clock)
    check = NodeCheck(health, stale_after=health.stale_after)
    with pytest.raises(TemporaryError, match="not probed yet"):
        await check()
    await health.probe_once()
    assert await check() == "3/3 nodes up"
    nodes.broken["10.77.0.12"] = "glusterd"
    await health.probe_once()
    assert await check() == (
        "2/3 nodes up; down: 10.77.0.12 (glusterd not answering: Connection failed. "
        "Please check if gluster daemon is operational.)"
    )
    ran = len(nodes.ran)
    await check()
    assert len(nodes.ran) == ran, "the check runs no command of its own"
    clock.now += health.stale_after + 1
    with pytest.raises(TemporaryError, match="finished 32s ago"):
        await check()


async def test_run_probes_every_interval_and_survives_a_crashing_round(
    world: tuple[DesiredState, Nodes, NodeHealth],
) -> None:
    state, nodes, _ = world
    waits: list[float] = []

    class Stop(Exception):
        pass

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            raise Stop

    health = NodeHealth(state, nodes, interval=2.5, sleep=sleep)
    original = health.probe_once
    rounds = 0

    async def flaky() -> None:
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            raise RuntimeError("bug")
        await original()

    health.probe_once = flaky  # type: ignore[method-assign]
    with pytest.raises(Stop):
        await health.run()
    assert waits == [2.5, 2.5, 2.5]
    assert rounds == 3
    assert len(nodes.ran) == 6
