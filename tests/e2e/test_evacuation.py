"""End to end on the real stack: ``device remove --evacuate`` moves a live replica brick with
``replace-brick … commit force`` and the data stays readable; a distribute volume refuses.

The tests run their own daemon on their own topics and clusters, so removing a device here does
not change the topology other tests use.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from devstack.stack import Daemon, Stack, load_topology
from provisioner.events import results
from provisioner.storage import commands
from provisioner.storage.parsing import parse_volume_info

pytestmark = pytest.mark.integration
FSTAB = "/var/lib/provisioner/fstab"


@pytest.fixture(scope="module")
def own(stack: Stack) -> Stack:
    return Stack(env=stack.env, gluster=stack.gluster)


@pytest_asyncio.fixture(scope="module")
async def daemon(own: Stack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Daemon]:
    process = Daemon(own, tmp_path_factory.mktemp("evacuation") / "daemon.log")
    process.start()
    try:
        await process.wait_ready()
        yield process
    finally:
        code = process.stop()
        print(f"\n--- evacuation daemon exited {code}; last lines ---\n{process.tail(30)}")


def result_of(completed: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The result event a ``--wait --json`` command printed."""
    assert completed.stdout.strip(), completed.stderr
    event: dict[str, Any] = json.loads(completed.stdout)
    return event


def provision(stack: Stack, cluster: str, name: str, *layout: str) -> results.VolumeOut:
    created = stack.cli(
        "request", "provision", "--cluster", cluster, "--size", "1GiB", "--name", name, *layout, "--wait", "--json"
    )
    assert created.returncode == 0, created.stdout + created.stderr
    return results.VolumeProvisioned.model_validate(result_of(created)["data"]).volume


def state(stack: Stack, cluster: str) -> dict[str, Any]:
    shown = stack.cli("state", "show", "--cluster", cluster, "--json")
    assert shown.returncode == 0, shown.stderr
    document: dict[str, Any] = json.loads(shown.stdout)
    return document


def device_name(document: dict[str, Any], device_id: str) -> str:
    [name] = [d["name"] for n in document["clusters"][0]["nodes"] for d in n["devices"] if d["id"] == device_id]
    return str(name)


async def gluster_bricks(stack: Stack, name: str) -> set[tuple[str, str]]:
    ssh = stack.ssh()
    try:
        info = await ssh.run(stack.nodes[0], commands.volume_info(name, timeout=30), timeout=60)
    finally:
        await ssh.close()
    [volume] = parse_volume_info(info.stdout)
    return {(b.host, b.path) for b in volume.bricks}


def mount(volume: results.VolumeOut, where: Path, log: Path) -> None:
    where.mkdir()
    subprocess.run(
        ["mount", "-n", "-t", "glusterfs", "-o", f"log-file={log}", volume.mount, str(where)],
        check=True,
        capture_output=True,
        timeout=60,
    )


def umount(where: Path) -> None:
    subprocess.run(["umount", "-n", str(where)], check=True, timeout=60)


async def test_device_remove_evacuates_a_replica_brick_and_keeps_the_data(
    own: Stack, daemon: Daemon, tmp_path: Path
) -> None:
    cluster = f"evac-{uuid.uuid4().hex[:6]}"
    await load_topology(own, cluster)
    name = f"ev_{uuid.uuid4().hex[:8]}"
    volume = provision(own, cluster, name)
    payload = f"kept across the move of {name}\n"
    first = tmp_path / "first"
    mount(volume, first, tmp_path / "first.log")
    try:
        (first / "kept.txt").write_text(payload)
    finally:
        umount(first)

    old = volume.bricks[0]
    before = state(own, cluster)
    leaving = device_name(before, old.device)
    removed = own.cli(
        "device",
        "remove",
        "--cluster",
        cluster,
        "--host",
        old.host,
        "--name",
        leaving,
        "--evacuate",
        "--wait",
        "--json",
    )
    assert removed.returncode == 0, removed.stdout + removed.stderr
    result = result_of(removed)
    assert result["type"] == "org.gluster.device.remove.succeeded.v1", result
    assert result["data"]["devices"] == 5

    after = state(own, cluster)
    devices = {d["id"] for n in after["clusters"][0]["nodes"] for d in n["devices"]}
    assert old.device not in devices
    [record] = [v for v in after["volumes"] if v["name"] == name]
    assert record["replacing"] == []
    [new] = [b for b in record["bricks"] if b["id"] not in {b.id for b in volume.bricks}]
    assert record["bricks"][0] == new, "the new brick takes the old one's place in its set"
    assert new["node"] == old.node and new["device"] != old.device, "the other nodes hold the set"
    new_path = f"/var/lib/provisioner/mounts/vg_{new['device']}/brick_{new['id']}/brick"
    listed = await gluster_bricks(own, name)
    assert (old.host, new_path) in listed and (old.host, old.path) not in listed
    assert len(listed) == 3

    fresh = tmp_path / "fresh"
    mount(volume, fresh, tmp_path / "fresh.log")
    try:
        assert (fresh / "kept.txt").read_text() == payload
    finally:
        umount(fresh)

    ssh = own.ssh()
    try:
        old_mount = old.path.removesuffix("/brick")
        exists = await ssh.run(old.host, ("test", "-e", old_mount), timeout=30, check=False)
        assert exists.exit_status != 0, f"{old_mount} still exists on {old.host}"
        images = await ssh.run(old.host, ("find", "/srv/devices", "-name", f"brick_{old.id}*"), timeout=30)
        assert images.stdout == "", images.stdout
        fstab = await ssh.run(old.host, ("cat", "--", FSTAB), timeout=30)
        assert f" {old_mount} " not in fstab.stdout
        assert f" {new_path.removesuffix('/brick')} xfs loop," in fstab.stdout
        # self-heal fills the new brick from the other two
        await ssh.run(own.nodes[0], ("gluster", "--mode=script", "volume", "heal", name), timeout=60, check=False)
        deadline = time.monotonic() + 120
        while True:
            copy = await ssh.run(old.host, ("cat", "--", f"{new_path}/kept.txt"), timeout=30, check=False)
            if copy.exit_status == 0 and copy.stdout == payload:
                break
            assert time.monotonic() < deadline, f"kept.txt never healed onto {old.host}:{new_path}"
            await asyncio.sleep(2)
    finally:
        await ssh.close()

    deleted = own.cli("request", "delete", "--cluster", cluster, "--name", name, "--wait")
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    ssh = own.ssh()
    try:
        left = await ssh.run(old.host, ("find", "/srv/devices", "-name", f"brick_{new['id']}*"), timeout=30)
        assert left.stdout == "", left.stdout
    finally:
        await ssh.close()


async def test_a_distribute_volume_refuses_evacuation_and_nothing_changes(own: Stack, daemon: Daemon) -> None:
    cluster = f"evac-{uuid.uuid4().hex[:6]}"
    await load_topology(own, cluster)
    name = f"evd_{uuid.uuid4().hex[:8]}"
    volume = provision(own, cluster, name, "--distribute")
    [brick] = volume.bricks
    before = state(own, cluster)
    listed = await gluster_bricks(own, name)

    refused = own.cli(
        "device",
        "remove",
        "--cluster",
        cluster,
        "--host",
        brick.host,
        "--name",
        device_name(before, brick.device),
        "--evacuate",
        "--wait",
        "--json",
    )
    assert refused.returncode == 1, refused.stdout + refused.stderr
    failure = result_of(refused)["data"]
    assert failure["reason"] == "CannotEvacuate" and name in failure["message"], failure

    assert state(own, cluster) == before
    assert await gluster_bricks(own, name) == listed
    deleted = own.cli("request", "delete", "--cluster", cluster, "--name", name, "--wait")
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
