"""The lvm backend on real disks: Heketi's own topology file, with bare device paths and no
capacities, loads on the QEMU storage guests and then provisions, expands and deletes replicated
volumes on thin LVs.

The load peer-probes, refuses a disk that holds a filesystem until the file says ``destroydata``,
runs ``pvcreate``/``vgcreate`` with our ids as VG tags and reads each device's capacity from its
VG; a re-load changes nothing. Each test starts and ends with the guests scrubbed (no volume, no
VG, no signature on the data disks).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from devstack.guests import Guests, load_guests
from devstack.stack import Daemon, Stack
from provisioner.executor.ssh import SshExecutor

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def guests() -> Guests:
    return load_guests()


@pytest.fixture(scope="module")
def own(stack: Stack) -> Stack:
    """Topics and group of this module alone: the namespace nodes' daemon never sees these requests."""
    return dataclasses.replace(stack, prefix=f"t{uuid.uuid4().hex[:8]}")


@pytest_asyncio.fixture(scope="module")
async def daemon(own: Stack, guests: Guests, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Daemon]:
    await guests.scrub()
    process = Daemon(own, tmp_path_factory.mktemp("lvm") / "daemon.log", extra_env=guests.daemon_env())
    process.start()
    try:
        await process.wait_ready()
        yield process
    finally:
        process.stop()
        print(f"\n--- lvm daemon, last lines ---\n{process.tail(30)}")
        await guests.scrub()


@pytest_asyncio.fixture
async def ssh(guests: Guests) -> AsyncIterator[SshExecutor]:
    executor = guests.ssh()
    try:
        yield executor
    finally:
        await executor.close()


def heketi_file(path: Path, guests: Guests, *, destroy: tuple[str, str] | None = None) -> Path:
    """A topology file as Heketi users write it: bare device paths, no backend, no capacity.
    ``destroy``: (node, device) written as Heketi's device object with ``destroydata``."""
    nodes = []
    for zone, node in enumerate(guests.nodes, start=1):
        devices: list[object] = [{"name": d, "destroydata": True} if (node, d) == destroy else d for d in guests.disks]
        nodes.append({"node": {"hostnames": {"manage": [node], "storage": [node]}, "zone": zone}, "devices": devices})
    path.write_text(json.dumps({"clusters": [{"nodes": nodes}]}, indent=2))
    return path


async def lines(ssh: SshExecutor, node: str, *argv: str) -> list[str]:
    done = await ssh.run(node, argv, timeout=120)
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


async def thin_lvs(ssh: SshExecutor, node: str) -> list[str]:
    """The thin brick LVs on ``node`` (``brick_<id>``), each checked to sit in its own thin pool."""
    rows = await lines(ssh, node, "lvm", "lvs", "--noheadings", "--separator", ":", "-o", "lv_name,lv_attr,pool_lv")
    bricks = [row.split(":") for row in rows if row.startswith("brick_")]
    for name, attr, pool in bricks:
        assert attr.startswith("V") and pool == f"tp_{name.removeprefix('brick_')}", (name, attr, pool)
    return sorted(name for name, _, _ in bricks)


async def test_a_heketi_topology_with_bare_paths_loads_and_provisions_on_thin_lvs(
    own: Stack, daemon: Daemon, guests: Guests, ssh: SshExecutor, tmp_path: Path
) -> None:
    cluster = f"lvm-{uuid.uuid4().hex[:6]}"
    first, disk = guests.nodes[0], guests.disks[-1]
    await ssh.run(first, ("mkfs.xfs", "-q", "-f", disk), timeout=120)  # someone's old filesystem

    refused = own.cli("topology", "load", str(heketi_file(tmp_path / "t.json", guests)), "--cluster", cluster, "--wait")
    assert refused.returncode != 0, refused.stdout
    assert "DeviceNotEmpty" in refused.stdout + refused.stderr, refused.stdout + refused.stderr
    assert f"node {first} device {disk}: holds xfs at 0x0" in refused.stdout + refused.stderr
    assert (await lines(ssh, first, "wipefs", "--noheadings", "--output", "TYPE", disk)) == ["xfs"], "refused: untouched"

    marked = heketi_file(tmp_path / "destroy.json", guests, destroy=(first, disk))
    loaded = own.cli("topology", "load", str(marked), "--cluster", cluster, "--wait", "--timeout", "300")
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    devices = len(guests.nodes) * len(guests.disks)
    assert f"{len(guests.nodes)} nodes, {devices} devices" in loaded.stdout
    for node in guests.nodes:
        rows = await lines(ssh, node, "lvm", "vgs", "--noheadings", "--separator", ":", "-o", "vg_name,vg_tags")
        tagged = [row for row in rows if "provisioner.cluster=" + cluster in row]
        assert len(tagged) == len(guests.disks), rows
        assert all(row.startswith("vg_") and "provisioner.device=" in row for row in tagged), rows

    again = own.cli("topology", "load", str(marked), "--cluster", cluster, "--wait", "--timeout", "300")
    assert again.returncode == 0, again.stdout + again.stderr

    shown = own.cli("state", "show", "--cluster", cluster)
    assert shown.returncode == 0, shown.stderr
    print(shown.stdout)

    name = f"lvm_{uuid.uuid4().hex[:8]}"
    created = own.cli(
        "request", "provision", "--cluster", cluster, "--size", "1GiB", "--name", name, "--wait", "--timeout", "600"
    )
    assert created.returncode == 0, created.stdout + created.stderr
    for node in guests.nodes:
        [lv] = await thin_lvs(ssh, node)
        mounted = [m for m in await lines(ssh, node, "cat", "/proc/mounts") if f"-{lv} " in m]
        assert len(mounted) == 1 and " xfs " in mounted[0], f"{node}: {lv} is not mounted as XFS: {mounted}"
        fstab = (await ssh.run(node, ("cat", "/etc/fstab"), timeout=30)).stdout
        assert f"-{lv} " in fstab, f"{node}: no fstab line for {lv}:\n{fstab}"

    expanded = own.cli(
        "request", "expand", "--cluster", cluster, "--name", name, "--size", "2GiB", "--wait", "--timeout", "600"
    )
    assert expanded.returncode == 0, expanded.stdout + expanded.stderr
    assert all([len(await thin_lvs(ssh, node)) == 2 for node in guests.nodes]), "one more replica set"

    own.assert_no_drift(cluster)
    deleted = own.cli("request", "delete", "--cluster", cluster, "--name", name, "--wait", "--timeout", "600")
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    for node in guests.nodes:
        assert await thin_lvs(ssh, node) == []
        assert "/var/lib/provisioner/mounts/" not in (await ssh.run(node, ("cat", "/etc/fstab"), timeout=30)).stdout
    own.assert_no_drift(cluster)
