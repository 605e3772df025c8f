"""Every durability gluster 10.3 offers, end to end on the real nodes: provision, mount, expand, delete.

One parametrized lifecycle per durability (distribute, replica 3, arbiter, disperse 2+1): the volume
gluster reports has the type and brick layout asked for, a FUSE client on the host can use it before
and after it grows by a brick set, and deleting it leaves nothing of its bricks on any node.
"""

from __future__ import annotations

import json
import subprocess
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

from devstack.stack import Daemon, Stack, TopicReader, produce
from provisioner.events import catalog, models, results
from provisioner.events.envelope import Event, encode, new_event
from provisioner.executor.ssh import SshExecutor
from provisioner.storage import commands
from provisioner.storage.parsing import VolumeInfo, parse_volume_info

pytestmark = pytest.mark.integration
GiB = 1024**3
TOPOLOGY = Path(__file__).resolve().parents[2] / "deploy" / "dev" / "topology.json"
FSTAB = "/var/lib/provisioner/fstab"


@dataclass(frozen=True)
class Case:
    spec: models.DistributeSpec | models.ReplicateSpec | models.DisperseSpec
    set_size: int  # bricks per set: what one provision creates and one expansion adds
    type: str  # gluster's typeStr for one set
    grown_type: str  # ... and for two
    grow_to: int = 2 * GiB  # a size one set cannot hold: bricks are at least 1 GiB (min_brick_size)
    arbiter_count: int = 0
    disperse_count: int = 0
    redundancy_count: int = 0


CASES = {
    "distribute": Case(models.DistributeSpec(), 1, "Distribute", "Distribute"),
    "replica3": Case(models.ReplicateSpec(replica=3), 3, "Replicate", "Distributed-Replicate"),
    "arbiter": Case(
        models.ReplicateSpec(replica=3, arbiter=True), 3, "Replicate", "Distributed-Replicate", arbiter_count=1
    ),
    "disperse2+1": Case(
        models.DisperseSpec(data=2, redundancy=1),
        3,
        "Disperse",
        "Distributed-Disperse",
        grow_to=4 * GiB,  # one set of two 1 GiB data bricks already holds 2 GiB
        disperse_count=3,
        redundancy_count=1,
    ),
}


@pytest.fixture(scope="module")
async def loaded(stack: Stack, daemon: Daemon) -> Daemon:
    result = stack.cli("topology", "load", str(TOPOLOGY), "--wait", "--timeout", "60")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "topology of cluster dev now: 3 nodes, 6 devices" in result.stdout
    return daemon


@pytest.fixture(scope="module")
def device_dirs(stack: Stack, loaded: Daemon) -> dict[str, str]:
    """Device id -> the directory holding its brick images, from the desired state."""
    shown = stack.cli("state", "show", "--cluster", "dev", "--json")
    assert shown.returncode == 0, shown.stderr
    [cluster] = json.loads(shown.stdout)["clusters"]
    return {d["id"]: d["name"] for n in cluster["nodes"] for d in n["devices"]}


async def send(stack: Stack, type_: str, data: models.Model) -> Event:
    """Publish one request and return its terminal result."""
    request = new_event(type_, data, source="/tests/e2e/durabilities")
    value, headers = encode(request)
    async with TopicReader(stack, stack.topic("results")) as results:
        await produce(stack, value, key=b"dev", headers=headers)
        return await results.wait_result(request.id)


async def gluster_info(ssh: SshExecutor, stack: Stack, name: str) -> tuple[VolumeInfo, ET.Element]:
    info = await ssh.run(stack.nodes[0], commands.volume_info(name, timeout=30), timeout=60)
    [volume] = parse_volume_info(info.stdout)
    # The parser keeps only what the provisioner needs; the set geometry is read from the raw XML.
    raw = ET.fromstring(info.stdout).find("volInfo/volumes/volume")
    assert raw is not None
    return volume, raw


def count(raw: ET.Element, tag: str) -> int:
    return int(raw.findtext(tag) or "-1")


def check_layout(gluster: VolumeInfo, raw: ET.Element, case: Case, sets: int, bricks: list[results.BrickOut]) -> None:
    assert gluster.status == "Started"
    assert gluster.type == (case.type if sets == 1 else case.grown_type), gluster.type
    assert gluster.brick_count == sets * case.set_size == len(gluster.bricks) == len(bricks)
    assert {(b.host, b.path) for b in gluster.bricks} == {(b.host, b.path) for b in bricks}
    assert count(raw, "arbiterCount") == case.arbiter_count
    assert count(raw, "disperseCount") == case.disperse_count
    assert count(raw, "redundancyCount") == case.redundancy_count
    arbiters = [b.arbiter for b in gluster.bricks]
    expected = [case.arbiter_count == 1 and i % case.set_size == case.set_size - 1 for i in range(len(arbiters))]
    assert arbiters == expected, "the last brick of each arbiter set, and only it, is the arbiter"
    assert {(b.host, b.path) for b in gluster.bricks if b.arbiter} == {(b.host, b.path) for b in bricks if b.arbiter}
    for index in range(0, len(gluster.bricks), case.set_size):
        members = gluster.bricks[index : index + case.set_size]
        assert len({b.host for b in members}) == len(members), "no two bricks of a set on one node"


def mount(volume: results.VolumeOut, mount_point: Path, log: Path) -> None:
    mount_point.mkdir(exist_ok=True)
    subprocess.run(
        ["mount", "-n", "-t", "glusterfs", "-o", f"log-file={log}", volume.mount, str(mount_point)],
        check=True,
        capture_output=True,
        timeout=60,
    )


def unmount(mount_point: Path) -> None:
    subprocess.run(["umount", "-n", str(mount_point)], check=True, capture_output=True, timeout=60)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_provision_mount_expand_and_delete(
    stack: Stack, loaded: Daemon, device_dirs: dict[str, str], case: Case, tmp_path: Path
) -> None:
    name = f"dur_{uuid.uuid4().hex[:8]}"
    deleted = False
    ssh = stack.ssh()
    try:
        provisioned = await send(
            stack,
            catalog.PROVISION_REQUESTED,
            models.ProvisionVolume(cluster="dev", size=GiB, name=name, durability=case.spec),
        )
        assert provisioned.type == catalog.succeeded_type(catalog.PROVISION_REQUESTED), provisioned.data
        assert isinstance(provisioned.data, results.VolumeProvisioned)
        volume = provisioned.data.volume
        assert volume.name == name and volume.durability == case.spec
        gluster, raw = await gluster_info(ssh, stack, name)
        check_layout(gluster, raw, case, 1, volume.bricks)

        mount_point = tmp_path / "mnt"
        payload = f"{case.spec.type} volume {name}\n"
        mount(volume, mount_point, tmp_path / "client.log")
        try:
            (mount_point / "kept.txt").write_text(payload)
            assert (mount_point / "kept.txt").read_text() == payload
        finally:
            unmount(mount_point)

        expanded = await send(
            stack, catalog.EXPAND_REQUESTED, models.ExpandVolume(cluster="dev", name=name, size=case.grow_to)
        )
        assert expanded.type == catalog.succeeded_type(catalog.EXPAND_REQUESTED), expanded.data
        assert isinstance(expanded.data, results.VolumeExpanded)
        assert expanded.data.added_bricks == case.set_size
        volume = expanded.data.volume
        assert volume.size == case.grow_to
        gluster, raw = await gluster_info(ssh, stack, name)
        check_layout(gluster, raw, case, 2, volume.bricks)

        mount(volume, mount_point, tmp_path / "client.log")
        try:
            assert (mount_point / "kept.txt").read_text() == payload
            (mount_point / "after.txt").write_text(payload)
            assert (mount_point / "after.txt").read_text() == payload
        finally:
            unmount(mount_point)

        for brick in volume.bricks:
            fstab = await ssh.run(brick.host, ("cat", "--", FSTAB), timeout=30)
            assert f" {brick.path.removesuffix('/brick')} xfs loop," in fstab.stdout, brick.host

        gone = await send(stack, catalog.DELETE_REQUESTED, models.DeleteVolume(cluster="dev", name=name))
        assert gone.type == catalog.succeeded_type(catalog.DELETE_REQUESTED), gone.data
        assert isinstance(gone.data, results.VolumeDeleted) and gone.data.existed
        deleted = True

        info = await ssh.run(stack.nodes[0], commands.volume_info(name, timeout=30), timeout=60)
        assert "does not exist" in info.stdout, info.stdout
        for brick in volume.bricks:
            mount_dir = brick.path.removesuffix("/brick")
            image = f"{device_dirs[brick.device]}/brick_{brick.id}.img"
            mounted = await ssh.run(brick.host, commands.is_mounted(mount_dir), timeout=30, check=False)
            assert mounted.exit_status != 0, f"{mount_dir} still mounted on {brick.host}"
            exists = await ssh.run(brick.host, ("test", "-e", image), timeout=30, check=False)
            assert exists.exit_status != 0, f"{image} left on {brick.host}"
            exists = await ssh.run(brick.host, ("test", "-e", mount_dir), timeout=30, check=False)
            assert exists.exit_status != 0, f"{mount_dir} left on {brick.host}"
        for host in stack.nodes:
            fstab = await ssh.run(host, ("cat", "--", FSTAB), timeout=30)
            for brick in volume.bricks:
                assert f"brick_{brick.id}" not in fstab.stdout, f"fstab line for brick {brick.id} left on {host}"
    finally:
        await ssh.close()
        if not deleted:
            stack.cli("request", "delete", "--cluster", "dev", "--name", name, "--wait", "--timeout", "120")


async def test_expanding_within_what_the_sets_hold_reports_the_requested_size(stack: Stack, loaded: Daemon) -> None:
    """Disperse 2+1 of 1 GiB gets two 1 GiB data bricks (the minimum brick): 2 GiB fit without a new set.

    The size must still follow the request, or a claim's PV would stay below what the claim asks for
    and the watcher would request the same expansion again and again."""
    name = f"dur_{uuid.uuid4().hex[:8]}"
    try:
        provisioned = await send(
            stack,
            catalog.PROVISION_REQUESTED,
            models.ProvisionVolume(cluster="dev", size=GiB, name=name, durability=models.DisperseSpec()),
        )
        assert isinstance(provisioned.data, results.VolumeProvisioned), provisioned.data
        expanded = await send(
            stack, catalog.EXPAND_REQUESTED, models.ExpandVolume(cluster="dev", name=name, size=2 * GiB)
        )
        assert isinstance(expanded.data, results.VolumeExpanded), expanded.data
        assert expanded.data.added_bricks == 0, "the one set already holds 2 GiB"
        assert expanded.data.volume.size == 2 * GiB, "a succeeded expansion reports the size asked for"
        shown = stack.cli("state", "show", "--cluster", "dev")
        assert shown.returncode == 0, shown.stderr
        [row] = [line for line in shown.stdout.splitlines() if line.startswith(name)]
        assert row.split()[1:4] == ["dev", "online", "2GiB"], "and the desired state keeps it"
    finally:
        stack.cli("request", "delete", "--cluster", "dev", "--name", name, "--wait", "--timeout", "120")
