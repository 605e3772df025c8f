"""Heketi's tags in placement: device tag matches and arbiter roles, by example and by hypothesis."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from provisioner.cli.parser import build_parser
from provisioner.cli.requests import provision_data
from provisioner.domain import Cluster, ClusterId, DeviceId, Replicate, Volume, VolumeId
from provisioner.errors import NoCapacity
from provisioner.events import catalog, models, results
from provisioner.events.envelope import new_event
from provisioner.planning.allocator import Limits, PlacementRequest, plan_volume
from provisioner.planning.evacuation import plan_replacement
from provisioner.planning.tags import TagMatch, device_tags, eligible, takes
from tests.fakes import World, cluster, failure

GiB = 1024**3
ARBITER = Replicate(replica=3, arbiter=True)


def tagged(*nodes: tuple[dict[str, str], list[dict[str, str]]], capacity: int = 100 * GiB) -> Cluster:
    """Nodes as (node tags, [device tags]); one zone per node (``tests.fakes.cluster``, tagged)."""
    plain = cluster(*((i, [capacity // GiB] * len(devices)) for i, (_, devices) in enumerate(nodes)))
    return dataclasses.replace(
        plain,
        nodes=tuple(
            dataclasses.replace(
                node,
                tags=tuple(sorted(node_tags.items())),
                devices=tuple(
                    dataclasses.replace(d, tags=tuple(sorted(t.items())))
                    for d, t in zip(node.devices, devices, strict=True)
                ),
            )
            for node, (node_tags, devices) in zip(plain.nodes, nodes, strict=True)
        ),
    )


REPLICA3 = Replicate()


def place(cluster: Cluster, *, match: str | None = None, durability: Replicate = REPLICA3) -> list[str]:
    request = PlacementRequest(
        volume=VolumeId("ab" * 16),
        size=GiB,
        durability=durability,
        tag_match=TagMatch.parse(match) if match else None,
    )
    return [b.device for b in plan_volume(request, cluster, {}).bricks]


def test_matches() -> None:
    ssd, not_ssd = TagMatch.parse("disk=ssd"), TagMatch.parse("disk!=ssd")
    assert (ssd.matches({"disk": "ssd"}), ssd.matches({"disk": "hdd"}), ssd.matches({})) == (True, False, False)
    assert (not_ssd.matches({"disk": "ssd"}), not_ssd.matches({"disk": "hdd"}), not_ssd.matches({})) == (
        False,
        True,
        True,
    )
    assert str(not_ssd) == "disk!=ssd"
    for bad in ("disk", "=ssd", "disk==ssd", "-x=1", "disk=a b"):
        with pytest.raises(ValueError, match="key=value or key!=value"):
            TagMatch.parse(bad)


def test_a_device_tag_overrides_its_nodes_and_an_untagged_cluster_is_not_copied() -> None:
    cluster = tagged(({"disk": "hdd", "rack": "r1"}, [{"disk": "ssd"}, {}]), ({}, [{}]), ({}, [{}]))
    node = cluster.nodes[0]
    assert device_tags(node, node.devices[0]) == {"disk": "ssd", "rack": "r1"}
    assert device_tags(node, node.devices[1]) == {"disk": "hdd", "rack": "r1"}
    plain = tagged(({}, [{}]), ({}, [{}]), ({}, [{}]))
    assert eligible(plain, None, arbiter=False) is plain, "the allocator keeps its cached index"
    assert eligible(cluster, TagMatch.parse("rack!=r9"), arbiter=False) is cluster


def test_a_matched_volume_goes_only_to_matching_devices() -> None:
    cluster = tagged(*[({}, [{"disk": "hdd"}, {"disk": "ssd"}]) for _ in range(3)], capacity=100 * GiB)
    assert sorted(place(cluster, match="disk=ssd")) == ["n0d1", "n1d1", "n2d1"]
    assert sorted(place(cluster, match="disk!=ssd")) == ["n0d0", "n1d0", "n2d0"]
    with pytest.raises(NoCapacity) as refused:
        place(cluster, match="disk=nvme")
    assert (
        str(refused.value)
        == "cluster c has 0 usable node(s) with devices matching disk=nvme; 3 are needed for one brick set"
    )


def test_arbiter_tags_keep_each_role_on_its_devices() -> None:
    cluster = tagged(({}, [{}]), ({}, [{}]), ({"arbiter": "required"}, [{}]), ({"arbiter": "disabled"}, [{}]))
    assert place(cluster, durability=ARBITER)[-1] == "n2d0", "the arbiter brick on the arbiter node"
    assert "n2d0" not in place(cluster), "no data brick on an arbiter-only node"
    only_disabled = tagged(({}, [{}]), ({}, [{}]), ({"arbiter": "disabled"}, [{}]))
    with pytest.raises(NoCapacity):
        place(only_disabled, durability=ARBITER)
    overridden = tagged(({}, [{}]), ({}, [{}]), ({"arbiter": "disabled"}, [{}, {"arbiter": "supported"}]))
    assert place(overridden, durability=ARBITER)[-1] == "n2d1", "a device tag overrides its node's"


TAG = st.sampled_from([{}, {"disk": "ssd"}, {"disk": "hdd"}, {"arbiter": "required"}, {"arbiter": "disabled"}])


@settings(max_examples=300, deadline=None)
@given(
    nodes=st.lists(st.tuples(TAG, st.lists(TAG, min_size=1, max_size=3)), min_size=3, max_size=7),
    match=st.sampled_from([None, "disk=ssd", "disk!=ssd"]),
    arbiter=st.booleans(),
)
def test_every_brick_is_on_a_device_its_role_and_match_allow(
    nodes: list[tuple[dict[str, str], list[dict[str, str]]]], match: str | None, arbiter: bool
) -> None:
    cluster = tagged(*nodes)
    durability = ARBITER if arbiter else Replicate()
    request = PlacementRequest(
        volume=VolumeId("cd" * 16), size=GiB, durability=durability, tag_match=TagMatch.parse(match) if match else None
    )
    try:
        plan = plan_volume(request, cluster, {})
    except NoCapacity:
        return
    assert len({b.node for b in plan.bricks}) == 3
    for brick in plan.bricks:
        node, device = cluster.device(brick.device)
        assert takes(node, device, request.tag_match, arbiter=brick.arbiter), (brick, device_tags(node, device))


def test_an_arbiter_tag_must_be_one_of_three() -> None:
    with pytest.raises(ValidationError, match="use supported, required or disabled"):
        models.TopologyDevice(name="/dev/vdb", tags={"arbiter": "maybe"})


def test_the_cli_sends_a_device_tag_match() -> None:
    args = build_parser().parse_args(
        ["request", "provision", "--cluster", "c", "--size", "1GiB", "--device-tag-match", "disk=ssd"]
    )
    assert provision_data(args).device_tag_match == "disk=ssd"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["request", "provision", "--cluster", "c", "--size", "1GiB", "--device-tag-match"])


async def test_a_matched_volume_stays_on_matching_devices_when_it_grows() -> None:
    topology = models.LoadTopology.model_validate(
        {
            "cluster": "dev",
            "nodes": [
                {
                    "node": {"hostnames": {"manage": [f"10.0.0.{i}"], "storage": [f"10.0.0.{i}"]}, "zone": i},
                    "devices": [
                        {"name": "/srv/hdd", "backend": "file", "capacity": 500 * GiB, "tags": {"disk": "hdd"}},
                        {"name": "/srv/ssd", "backend": "file", "capacity": 100 * GiB, "tags": {"disk": "ssd"}},
                    ],
                }
                for i in range(1, 4)
            ],
        }
    )
    world = World(topology=topology)
    await world.load()
    made = await world.provision(name="fast", size=GiB, device_tag_match="disk=ssd")
    assert isinstance(made.result.data, results.VolumeProvisioned), made.result.data
    grow = models.ExpandVolume(cluster="dev", name="fast", size=2 * GiB)
    grown = await world.handle(new_event(catalog.EXPAND_REQUESTED, grow, source="/t"))
    assert grown.result.type.endswith("succeeded.v1"), grown.result.data
    volume = world.state.volume_named(ClusterId("dev"), "fast")
    assert volume is not None and len(volume.bricks) == 6 and volume.device_tag_match == "disk=ssd"
    cluster = world.state.require_cluster("dev")
    assert {cluster.device(b.device)[1].name for b in volume.bricks} == {"/srv/ssd"}
    too_big = await world.provision(name="huge", size=200 * GiB, device_tag_match="disk=ssd")
    assert failure(too_big).reason == "NoDeviceWithSpace"
    assert "(devices matching disk=ssd only)" in failure(too_big).message


def test_an_evacuated_brick_moves_only_to_a_device_its_volume_matches() -> None:
    cluster = tagged(
        *[({}, [{"disk": "ssd"}]) for _ in range(3)], ({}, [{"disk": "hdd"}, {"disk": "ssd"}]), capacity=100 * GiB
    )
    roomy_hdd = dataclasses.replace(cluster.nodes[3].devices[0], capacity=1000 * GiB)  # the most free: not allowed
    small_ssd = dataclasses.replace(cluster.nodes[3].devices[1], capacity=50 * GiB)  # so the plan leaves node 3 out
    nodes = (*cluster.nodes[:3], dataclasses.replace(cluster.nodes[3], devices=(roomy_hdd, small_ssd)))
    cluster = dataclasses.replace(cluster, nodes=nodes)
    request = PlacementRequest(
        volume=VolumeId("ef" * 16), size=GiB, durability=REPLICA3, tag_match=TagMatch.parse("disk=ssd")
    )
    plan = plan_volume(request, cluster, {})
    volume = Volume(
        id=VolumeId("ef" * 16),
        name="fast",
        cluster=cluster.id,
        size=GiB,
        durability=REPLICA3,
        bricks=plan.bricks,
        device_tag_match="disk=ssd",
    )
    old = next(b for b in plan.bricks if b.device == "n0d0")
    new = plan_replacement(volume, old, cluster, {}, {DeviceId("n0d0")}, Limits())
    assert new.device == "n3d1"
    untagged = dataclasses.replace(volume, device_tag_match=None)
    assert plan_replacement(untagged, old, cluster, {}, {DeviceId("n0d0")}, Limits()).device == "n3d0"
