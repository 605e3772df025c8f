"""Several manage hostnames per node: the next is tried only when one cannot be reached at all."""

from __future__ import annotations

import dataclasses

import pytest

from provisioner.domain import Brick, BrickId, ClusterId, Replicate, Volume, VolumeId
from provisioner.errors import CommandTimeout, HostKeyRejected, NodeUnreachable, ProvisionerError
from provisioner.events import models
from provisioner.executor import Argv, CommandResult
from provisioner.executor.alternates import AlternateHosts
from provisioner.planning.clusters import cluster_from, declaration_of
from provisioner.state import DesiredState, StateChange
from provisioner.storage.operations import mount_source


class Hosts:
    """Each host either answers or fails with the error it is given."""

    def __init__(self, failing: dict[str, ProvisionerError]) -> None:
        self.failing = failing
        self.tried: list[str] = []

    async def run(self, host: str, argv: Argv, *, timeout: float, check: bool = True) -> CommandResult:
        self.tried.append(host)
        if host in self.failing:
            raise self.failing[host]
        return CommandResult(host, argv, 0, host, "")

    async def close(self) -> None:
        return None


def alternates(host: str) -> tuple[str, ...]:
    return {"a": ("a2", "a3")}.get(host, ())


async def test_the_first_reachable_hostname_runs_the_command() -> None:
    hosts = Hosts({"a": NodeUnreachable("a", "refused"), "a2": NodeUnreachable("a2", "no route")})
    result = await AlternateHosts(hosts, alternates).run("a", ("true",), timeout=5)
    assert (result.host, hosts.tried) == ("a3", ["a", "a2", "a3"])
    hosts = Hosts({})
    await AlternateHosts(hosts, alternates).run("a", ("true",), timeout=5)
    assert hosts.tried == ["a"]


async def test_every_hostname_unreachable_raises_the_last_failure() -> None:
    hosts = Hosts({h: NodeUnreachable(h, "down") for h in ("a", "a2", "a3")})
    with pytest.raises(NodeUnreachable) as raised:
        await AlternateHosts(hosts, alternates).run("a", ("true",), timeout=5)
    assert "a3" in str(raised.value)


@pytest.mark.parametrize(
    "error", [HostKeyRejected("a", "host key mismatch"), CommandTimeout("a", ("gluster",), 5)], ids=["key", "timeout"]
)
async def test_a_wrong_key_or_a_timeout_never_moves_on(error: ProvisionerError) -> None:
    hosts = Hosts({"a": error})
    with pytest.raises(type(error)):
        await AlternateHosts(hosts, alternates).run("a", ("true",), timeout=5)
    assert hosts.tried == ["a"]


def test_several_hostnames_load_and_come_back_and_give_clients_more_volfile_servers() -> None:
    topology = models.LoadTopology.model_validate(
        {
            "cluster": "c",
            "nodes": [
                {
                    "node": {"hostnames": {"manage": [f"m{i}", f"m{i}.backup"], "storage": [f"s{i}", f"s{i}.other"]}},
                    "devices": [{"name": "/d", "backend": "file", "capacity": 10**12}],
                }
                for i in range(3)
            ],
        }
    )
    cluster = cluster_from(topology)
    first = cluster.nodes[0]
    assert (first.manage, first.manage_alternates, first.storage_alternates) == ("m0", ("m0.backup",), ("s0.other",))
    assert declaration_of(cluster) == topology
    state = DesiredState()
    state.apply(StateChange.put_cluster(cluster))
    assert (state.manage_alternates("m1"), state.manage_alternates("elsewhere")) == (("m1.backup",), ())
    plain = cluster_from(topology.model_copy(update={"nodes": topology.nodes[:1]}))
    state.apply(
        StateChange.put_cluster(
            dataclasses.replace(plain, nodes=(dataclasses.replace(plain.nodes[0], manage_alternates=()),))
        )
    )
    assert (state.manage_alternates("m0"), state.manage_alternates("m1")) == ((), ()), "a new record replaces the old"
    bricks = tuple(
        Brick(id=BrickId(f"{i:032x}"), node=n.id, device=n.devices[0].id, size=1, set_index=0)
        for i, n in enumerate(cluster.nodes)
    )
    volume = Volume(VolumeId("a" * 32), "v", ClusterId("c"), 1, Replicate(), bricks)
    assert mount_source(cluster, volume) == ("s0:/v", ["s1", "s2", "s0.other", "s1.other", "s2.other"])


def test_a_hostname_is_listed_once_and_belongs_to_one_node() -> None:
    with pytest.raises(ValueError, match="manage lists a hostname twice"):
        models.TopologyHostnames(manage=["a", "a"], storage=["a"])
    with pytest.raises(ValueError, match="share a manage hostname"):
        models.LoadTopology.model_validate(
            {
                "cluster": "c",
                "nodes": [
                    {"node": {"hostnames": {"manage": ["a", "b"], "storage": ["a"]}}},
                    {"node": {"hostnames": {"manage": ["b"], "storage": ["b"]}}},
                ],
            }
        )
