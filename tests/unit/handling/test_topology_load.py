"""``topology load`` as Heketi does it, against the fake nodes: the pool, empty devices, measured capacity."""

from __future__ import annotations

import pytest

from provisioner.cli.parser import build_parser
from provisioner.cli.requests import topology_change
from provisioner.domain import ClusterId
from provisioner.events import catalog, models, results
from provisioner.events.envelope import new_event
from tests.fakes import World, failure

GiB = 1024**3


def heketi_topology(*devices: dict[str, object] | str, nodes: int = 3) -> models.LoadTopology:
    """Heketi's own shape: bare device paths (or Heketi's device objects), no backend, no capacity."""
    return models.LoadTopology.model_validate(
        {
            "cluster": "dev",
            "nodes": [
                {
                    "node": {"hostnames": {"manage": [f"10.0.0.{i}"], "storage": [f"10.0.0.{i}"]}, "zone": i},
                    "devices": [{"name": d} if isinstance(d, str) else d for d in devices or ("/dev/vdb",)],
                }
                for i in range(1, nodes + 1)
            ],
        }
    )


async def load(world: World, topology: models.LoadTopology) -> results.TopologyLoaded | results.RequestFailed:
    outcome = await world.handle(new_event(catalog.TOPOLOGY_LOAD_REQUESTED, topology, source="/t"))
    data = outcome.result.data
    assert isinstance(data, results.TopologyLoaded | results.RequestFailed)
    return data


def capacities(world: World) -> dict[str, int]:
    cluster = world.state.require_cluster("dev")
    return {f"{n.manage}:{d.name}": d.capacity for n in cluster.nodes for d in n.devices}


async def test_a_heketi_file_with_bare_paths_probes_prepares_measures_and_provisions() -> None:
    world = World()
    loaded = await load(world, heketi_topology("/dev/vdb", "/dev/vdc"))
    assert isinstance(loaded, results.TopologyLoaded) and (loaded.nodes, loaded.devices) == (3, 6)
    assert world.nodes.peers == {"10.0.0.2", "10.0.0.3"}
    probes = [(host, argv[-1]) for host, argv in world.nodes.calls if argv[4:6] == ("peer", "probe")]
    assert probes == [("10.0.0.1", "10.0.0.2"), ("10.0.0.1", "10.0.0.3")], "each from the pool so far"
    created = sorted((host, argv[-1]) for host, argv in world.nodes.calls if argv[:2] == ("lvm", "vgcreate"))
    assert created == sorted((f"10.0.0.{i}", d) for i in (1, 2, 3) for d in ("/dev/vdb", "/dev/vdc"))
    assert set(capacities(world).values()) == {100 * GiB}, "read from the VG: the file declared none"
    assert (await world.provision(name="v1", size=10 * GiB)).result.type.endswith("succeeded.v1")
    assert len([lv for lv, pool in world.nodes.thin.items() if pool]) == 3, "a thin LV per brick"
    assert (await world.delete(name="v1")).result.type.endswith("succeeded.v1")
    assert world.nodes.thin == {}, "and every pool and LV gone again"


async def test_a_declared_capacity_is_only_an_upper_bound() -> None:
    world = World()
    world.nodes.vg_size = 50 * GiB
    small = {"name": "/dev/vdb", "capacity": 20 * GiB}
    large = {"name": "/dev/vdc", "capacity": 500 * GiB}
    assert isinstance(await load(world, heketi_topology(small, large)), results.TopologyLoaded)
    assert {k.rsplit(":", 1)[1]: v for k, v in capacities(world).items()} == {
        "/dev/vdb": 20 * GiB,
        "/dev/vdc": 50 * GiB,
    }


async def test_a_reload_is_idempotent_and_measures_again() -> None:
    world = World()
    await load(world, heketi_topology())
    world.nodes.calls.clear()
    world.nodes.vg_size = 120 * GiB  # the disks grew
    assert isinstance(await load(world, heketi_topology()), results.TopologyLoaded)
    assert not [argv for _, argv in world.nodes.calls if argv[1:2] in (("pvcreate",), ("vgcreate",))]
    assert not [argv for _, argv in world.nodes.calls if "probe" in argv]
    assert set(capacities(world).values()) == {120 * GiB}


async def test_every_device_that_is_not_empty_is_named_and_nothing_is_recorded() -> None:
    world = World()
    world.nodes.held[("10.0.0.1", "/dev/vdc")] = ("xfs",)
    world.nodes.held[("10.0.0.3", "/dev/vdb")] = ("gpt", "PMBR")
    refused = await load(world, heketi_topology("/dev/vdb", "/dev/vdc"))
    assert isinstance(refused, results.RequestFailed) and refused.reason == "DeviceNotEmpty"
    assert refused.message.startswith("2 of 6 devices are not ready: ")
    assert "node 10.0.0.1 device /dev/vdc: holds xfs at 0x0; set destroydata" in refused.message
    assert "node 10.0.0.3 device /dev/vdb: holds gpt at 0x0, PMBR at 0x0; set destroydata" in refused.message
    assert ClusterId("dev") not in world.state.clusters
    assert not [argv for _, argv in world.nodes.calls if argv[:2] == ("wipefs", "--all")]


async def test_destroydata_wipes_only_the_devices_it_marks() -> None:
    world = World()
    world.nodes.held[("10.0.0.1", "/dev/vdb")] = ("xfs",)
    world.nodes.held[("10.0.0.2", "/dev/vdb")] = ("xfs",)
    marked = heketi_topology({"name": "/dev/vdb", "destroydata": True})
    document = marked.model_dump()
    document["nodes"][1]["devices"][0]["destroydata"] = False
    refused = await load(world, models.LoadTopology.model_validate(document))
    assert failure_of(refused) == ("DeviceNotEmpty", "node 10.0.0.2 device /dev/vdb: holds xfs at 0x0")
    wiped = [host for host, argv in world.nodes.calls if argv[:2] == ("wipefs", "--all")]
    assert wiped == ["10.0.0.1"]
    assert isinstance(await load(world, marked), results.TopologyLoaded)


async def test_a_device_add_with_destroydata_wipes_it_and_takes_its_measure() -> None:
    world = World()
    await load(world, heketi_topology())
    world.nodes.held[("10.0.0.2", "/dev/vdc")] = ("ext4",)
    device = models.TopologyDevice(name="/dev/vdc")
    add = models.AddDevice(cluster="dev", host="10.0.0.2", device=device)
    refused = await world.handle(new_event(catalog.DEVICE_ADD_REQUESTED, add, source="/t"))
    assert failure(refused).reason == "DeviceNotEmpty"
    add = add.model_copy(update={"device": device.model_copy(update={"destroydata": True})})
    added = await world.handle(new_event(catalog.DEVICE_ADD_REQUESTED, add, source="/t"))
    assert added.result.type.endswith("succeeded.v1")
    assert capacities(world)["10.0.0.2:/dev/vdc"] == 100 * GiB


def failure_of(data: results.TopologyLoaded | results.RequestFailed) -> tuple[str, str]:
    assert isinstance(data, results.RequestFailed)
    return data.reason, data.message.split(";")[0]


async def test_device_resync_takes_in_a_disk_that_grew() -> None:
    world = World()
    await load(world, heketi_topology({"name": "/dev/vdb", "capacity": 80 * GiB}))
    assert capacities(world)["10.0.0.2:/dev/vdb"] == 80 * GiB
    world.nodes.calls.clear()
    world.nodes.vg_size = 200 * GiB
    ref = models.DeviceRef(cluster="dev", host="10.0.0.2", name="/dev/vdb")
    synced = await world.handle(new_event(catalog.DEVICE_RESYNC_REQUESTED, ref, source="/t"))
    assert synced.result.type == catalog.succeeded_type(catalog.DEVICE_RESYNC_REQUESTED)
    assert [argv[:2] for host, argv in world.nodes.calls] == [("lvm", "pvresize"), ("lvm", "vgs")]
    assert capacities(world)["10.0.0.2:/dev/vdb"] == 200 * GiB, "the disk's size now, not the old declaration"
    assert capacities(world)["10.0.0.1:/dev/vdb"] == 80 * GiB, "no other device changed"
    unknown = ref.model_copy(update={"name": "/dev/vdz"})
    failed = await world.handle(new_event(catalog.DEVICE_RESYNC_REQUESTED, unknown, source="/t"))
    assert failure(failed).reason == "UnknownDevice"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["device", "resync", "--cluster", "c", "--host", "h1", "--name", "/dev/vdb"],
            (catalog.DEVICE_RESYNC_REQUESTED, models.DeviceRef(cluster="c", host="h1", name="/dev/vdb")),
        ),
        (
            [
                "device",
                "add",
                "--cluster",
                "c",
                "--host",
                "h1",
                "--name",
                "/dev/vdc",
                "--backend",
                "lvm",
                "--destroydata",
            ],
            (
                catalog.DEVICE_ADD_REQUESTED,
                models.AddDevice(
                    cluster="c", host="h1", device=models.TopologyDevice(name="/dev/vdc", destroydata=True)
                ),
            ),
        ),
    ],
)
def test_the_cli_sends_resync_and_destroydata(argv: list[str], expected: tuple[str, models.Model]) -> None:
    assert topology_change(build_parser().parse_args(argv)) == expected
