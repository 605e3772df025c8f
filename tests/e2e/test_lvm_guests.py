"""The lvm backend on real disks: Heketi's own topology file, with bare device paths and no
capacities, loads on the QEMU storage guests and then provisions, expands and deletes replicated
volumes on thin LVs.

The load peer-probes, refuses a disk that holds a filesystem until the file says ``destroydata``,
runs ``pvcreate``/``vgcreate`` with our ids as VG tags and reads each device's capacity from its
VG; a re-load changes nothing. Each test starts and ends with the guests scrubbed (no volume, no
VG, no signature on the data disks).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from devstack.guests import Guests, load_guests
from devstack.stack import Daemon, Stack, TopicReader, produce
from provisioner.events import catalog, models
from provisioner.events.envelope import encode, new_event
from provisioner.executor.fault import CRASH_EXIT_CODE
from provisioner.executor.ssh import SshExecutor
from provisioner.storage import commands
from provisioner.storage.parsing import BrickHeal, parse_heal_info

pytestmark = pytest.mark.integration
GiB = 1024**3


@pytest.fixture(scope="module")
def guests() -> Guests:
    return load_guests()


def guest_stack(stack: Stack, guests: Guests) -> Stack:
    """Topics and group of their own (the namespace nodes' daemon never sees these requests), and
    the guests' host keys for every daemon and CLI run of it."""
    return dataclasses.replace(stack, prefix=f"t{uuid.uuid4().hex[:8]}", env={**stack.env, **guests.daemon_env()})


@pytest.fixture(scope="module")
def own(stack: Stack, guests: Guests) -> Stack:
    return guest_stack(stack, guests)


@pytest_asyncio.fixture(scope="module")
async def daemon(own: Stack, guests: Guests, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Daemon]:
    await guests.scrub()
    # No periodic pass while the tests fill VGs behind the daemon's back: each check sees the
    # request path itself, not what a pass happened to read first.
    env = {**guests.daemon_env(), "PROVISIONER_WORKER__RECONCILE_INTERVAL": "3600"}
    process = Daemon(own, tmp_path_factory.mktemp("lvm") / "daemon.log", extra_env=env)
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


async def wait_unmounted(ssh: SshExecutor, node: str, mount_point: str, *, timeout: float = 60) -> None:
    """Unmount, retrying while the brick process that was just killed still holds the filesystem."""
    deadline = time.monotonic() + timeout
    while not (await ssh.run(node, ("umount", "--", mount_point), timeout=60, check=False)).ok:
        assert time.monotonic() < deadline, f"{mount_point} on {node} still busy after {timeout}s"
        await asyncio.sleep(1)


async def volume_groups(ssh: SshExecutor, node: str) -> dict[str, str]:
    """Data disk -> the VG on it."""
    rows = await lines(ssh, node, "lvm", "pvs", "--noheadings", "--separator", ":", "-o", "pv_name,vg_name")
    return dict(row.split(":", 1) for row in rows)


async def lv_names(ssh: SshExecutor, node: str, vg: str) -> list[str]:
    return await lines(ssh, node, "lvm", "lvs", "--noheadings", "-o", "lv_name", vg)


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
    assert (await lines(ssh, first, "wipefs", "--noheadings", "--output", "TYPE", disk)) == ["xfs"], (
        "refused: untouched"
    )

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

    # Someone fills both VGs of the first guest behind our back: the request fails naming the device.
    groups = await volume_groups(ssh, first)
    for vg in groups.values():
        await ssh.run(first, ("lvm", "lvcreate", "-qq", "-l", "100%FREE", "-n", "filler", vg), timeout=120)
    full = own.cli("request", "provision", "--cluster", cluster, "--size", "1GiB", "--wait", "--timeout", "600")
    assert full.returncode == 1 and "FAILED (DeviceFull): node " + first + " device /dev/vd" in full.stdout, full.stdout
    assert await thin_lvs(ssh, first) == [], "rolled back"
    for vg in groups.values():
        await ssh.run(first, ("lvm", "lvremove", "-f", f"{vg}/filler"), timeout=120)

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

    # An orphan LV of ours (a crashed create) is found and removed; nothing else is touched.
    orphan = uuid.uuid4().hex
    marks: tuple[str, ...] = ("--addtag", f"provisioner.volume={uuid.uuid4().hex}")
    marks += ("--addtag", f"provisioner.brick={orphan}", "--addtag", f"provisioner.owner={own.topic('state')}")
    vg = groups[guests.disks[0]]
    pool = ("lvm", "lvcreate", "-qq", "--type", "thin-pool", "--poolmetadatasize", "4M", "--size", "64M")
    await ssh.run(first, (*pool, "--name", f"tp_{orphan}", vg), timeout=120)
    thin = ("lvm", "lvcreate", "-qq", "--thin", f"{vg}/tp_{orphan}", "--virtualsize", "64M")
    await ssh.run(first, (*thin, "--name", f"brick_{orphan}", *marks), timeout=120)
    found = own.cli("reconcile", "--cluster", cluster)
    assert "orphan_brick" in found.stdout and orphan in found.stdout, found.stdout + found.stderr
    repaired = own.cli("reconcile", "--cluster", cluster, "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert f"brick_{orphan}" not in "".join(await lines(ssh, first, "lvm", "lvs", "-o", "lv_name"))
    own.assert_no_drift(cluster)

    # A brick whose LV is gone is reported, and nothing recreates it behind the operator's back.
    last = guests.nodes[-1]
    [gone, _] = await thin_lvs(ssh, last)
    [mount_point] = [m.split()[1] for m in await lines(ssh, last, "cat", "/proc/mounts") if f"-{gone} " in m]
    await ssh.run(last, ("pkill", "-f", f"{mount_point}/brick"), timeout=60)  # the brick process holds it
    await wait_unmounted(ssh, last, mount_point)
    [gone_vg] = [v for v in (await volume_groups(ssh, last)).values() if gone in await lv_names(ssh, last, v)]
    await ssh.run(last, ("lvm", "lvremove", "-f", f"{gone_vg}/{gone}"), timeout=120)
    for _ in range(2):
        missing = own.cli("reconcile", "--cluster", cluster, "--repair")
        assert "missing_brick" in missing.stdout and gone.removeprefix("brick_") in missing.stdout, missing.stdout
    assert gone not in await lv_names(ssh, last, gone_vg), "not silently recreated"

    deleted = own.cli("request", "delete", "--cluster", cluster, "--name", name, "--wait", "--timeout", "600")
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    for node in guests.nodes:
        assert await thin_lvs(ssh, node) == []
        assert "/var/lib/provisioner/mounts/" not in (await ssh.run(node, ("cat", "/etc/fstab"), timeout=30)).stdout
    own.assert_no_drift(cluster)


async def healed(ssh: SshExecutor, node: str, volume: str, *, timeout: float = 420) -> list[BrickHeal]:
    """Heal info once every brick is connected with nothing left to heal (fails after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        done = await ssh.run(node, commands.volume_heal_info(volume, timeout=60), timeout=90, check=False)
        bricks = parse_heal_info(done.stdout) if done.ok else []
        if bricks and all(b.connected and b.pending == 0 for b in bricks):
            return bricks
        assert time.monotonic() < deadline, f"{volume} not healed within {timeout}s: {bricks or done.stdout}"
        await asyncio.sleep(5)


async def test_a_disk_lost_at_boot_is_reported_and_its_bricks_mount_again_from_fstab(
    own: Stack, daemon: Daemon, guests: Guests, ssh: SshExecutor, tmp_path: Path
) -> None:
    """A power cut, and the guest comes back without one disk: reconcile names the device and the
    brick it held; the volume keeps serving (replica 3). Rebooted with the disk, the brick is mounted
    again from /etc/fstab, glusterd starts it, and what was written meanwhile heals onto it."""
    await guests.scrub()
    cluster = f"boot-{uuid.uuid4().hex[:6]}"
    loaded = own.cli("topology", "load", str(heketi_file(tmp_path / "t.json", guests)), "--cluster", cluster, "--wait")
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    name = f"boot_{uuid.uuid4().hex[:8]}"
    created = own.cli(
        "request", "provision", "--cluster", cluster, "--size", "1GiB", "--name", name, "--wait", "--timeout", "600"
    )
    assert created.returncode == 0, created.stdout + created.stderr
    first, last, last_name = guests.nodes[0], guests.nodes[-1], guests.names[-1]
    client = "/mnt/boot-test"
    await ssh.run(first, ("mkdir", "-p", "--", client), timeout=30)
    await ssh.run(first, ("mount", "-t", "glusterfs", f"{first}:/{name}", client), timeout=120)
    try:
        await ssh.run(first, ("sh", "-c", 'echo before >"$1/before"', "sh", client), timeout=120)
        [lv] = await thin_lvs(ssh, last)
        [disk] = [d for d, vg in (await volume_groups(ssh, last)).items() if lv in await lv_names(ssh, last, vg)]
        await asyncio.to_thread(guests.reboot, last_name, without_disks=(disk.removeprefix("/dev/"),), hard=True)

        found = own.cli("reconcile", "--cluster", cluster)
        assert found.returncode != 0, found.stdout
        assert "missing_device" in found.stdout and f"device {disk} on {last} is missing" in found.stdout, found.stdout
        assert f"it held 1 brick(s): {lv.removeprefix('brick_')} of {name}" in found.stdout, found.stdout
        await ssh.run(first, ("sh", "-c", 'echo during >"$1/during"', "sh", client), timeout=180)

        await asyncio.to_thread(guests.reboot, last_name)
        mounted = [m for m in await lines(ssh, last, "cat", "/proc/mounts") if f"-{lv} " in m]
        assert len(mounted) == 1, f"{lv} not mounted again from /etc/fstab after the reboot"
        bricks = await healed(ssh, first, name)
        assert len(bricks) == 3
        brick_dir = mounted[0].split()[1] + "/brick"
        assert (await lines(ssh, last, "cat", f"{brick_dir}/during")) == ["during"], "healed onto the returned brick"
        own.assert_no_drift(cluster)
    finally:
        await ssh.run(first, ("umount", "-l", "--", client), timeout=60, check=False)
    deleted = own.cli("request", "delete", "--cluster", cluster, "--name", name, "--wait", "--timeout", "600")
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr


async def test_snapshots_and_clones_hold_their_moment_and_outlive_their_origin(
    own: Stack, daemon: Daemon, guests: Guests, ssh: SshExecutor, tmp_path: Path
) -> None:
    """A snapshot keeps the data of its moment; a clone of it is a volume of ours with that data and
    a life of its own; a clone of a volume takes the data of now. The origin cannot be deleted while
    it has snapshots, can be once they are gone, and its clones live on."""
    await guests.scrub()
    cluster = f"snap-{uuid.uuid4().hex[:6]}"
    loaded = own.cli("topology", "load", str(heketi_file(tmp_path / "t.json", guests)), "--cluster", cluster, "--wait")
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr

    def cli(*args: str, expect: int = 0) -> str:
        done = own.cli(*args, "--cluster", cluster, "--wait", "--timeout", "600")
        assert done.returncode == expect, f"{args}: {done.stdout}{done.stderr}"
        return done.stdout

    origin, monday = f"o_{uuid.uuid4().hex[:6]}", f"mon_{uuid.uuid4().hex[:6]}"
    copy, now = f"c_{uuid.uuid4().hex[:6]}", f"n_{uuid.uuid4().hex[:6]}"
    cli("request", "provision", "--size", "1GiB", "--name", origin)
    first = guests.nodes[0]
    mounts: list[str] = []

    async def mount(volume: str) -> str:
        where = f"/mnt/{volume}"
        await ssh.run(first, ("mkdir", "-p", "--", where), timeout=30)
        await ssh.run(first, ("mount", "-t", "glusterfs", f"{first}:/{volume}", where), timeout=120)
        mounts.append(where)
        return where

    async def files(where: str) -> list[str]:
        return sorted(await lines(ssh, first, "ls", "--", where))

    async def write(where: str, name: str) -> None:
        await ssh.run(first, ("sh", "-c", 'echo "$2" >"$1/$2" && sync', "sh", where, name), timeout=120)

    try:
        at = await mount(origin)
        await write(at, "one")
        assert f"snapshot {monday}" in cli("snapshot", "create", "--volume", origin, "--name", monday)
        await write(at, "two")
        assert monday in cli("snapshot", "list", "--volume", origin)

        assert f"cloned {copy}" in cli("request", "clone", "--from-snapshot", monday, "--name", copy)
        assert f"cloned {now}" in cli("request", "clone", "--from-volume", origin, "--name", now)
        copy_at, now_at = await mount(copy), await mount(now)
        assert await files(copy_at) == ["one"], "the snapshot's moment"
        assert await files(now_at) == ["one", "two"], "the volume as it was when cloned"
        await write(copy_at, "three")
        assert await files(at) == ["one", "two"], "a clone's writes are its own"
        own.assert_no_drift(cluster)

        refused = cli("request", "delete", "--name", origin, expect=1)
        assert "FAILED (VolumeHasSnapshots)" in refused and monday in refused
        assert "deleted snapshot" in cli("snapshot", "delete", "--name", monday)
        await ssh.run(first, ("umount", "--", at), timeout=120)
        mounts.remove(at)
        assert "deleted" in cli("request", "delete", "--name", origin)
        assert await files(copy_at) == ["one", "three"], "a clone outlives its origin"
        own.assert_no_drift(cluster)
    finally:
        for where in mounts:
            await ssh.run(first, ("umount", "-l", "--", where), timeout=60, check=False)
    for name in (copy, now):
        cli("request", "delete", "--name", name)
    for node in guests.nodes:
        left = await lines(ssh, node, "lvm", "lvs", "--noheadings", "-o", "lv_name")
        assert left == [], f"{node} still has LVs: {left}"
    own.assert_no_drift(cluster)


# Where the daemon dies: mid-way through the bricks of a provision, after every brick is mounted,
# right after gluster took a snapshot, and mid-way through a clone's bricks. Only commands that a
# reconcile pass never runs are counted, so the point does not move with a pass at start-up.
CRASH_POINTS = ("mkfs.xfs:2", "mount:3", "gluster_snapshot_create:1", "setfattr:2")


async def test_a_crash_at_each_lvm_step_leaves_one_result_and_no_drift(
    stack: Stack, guests: Guests, tmp_path: Path
) -> None:
    """The daemon is killed at each of CRASH_POINTS (a provision, a snapshot, a clone on real thin
    LVs) and restarted: the request gets exactly one result, a success, and reconcile finds nothing."""
    await guests.scrub()
    mine = guest_stack(stack, guests)
    cluster = f"crash-{uuid.uuid4().hex[:6]}"
    env = {**guests.daemon_env(), "PROVISIONER_WORKER__RECONCILE_INTERVAL": "3600"}

    async def answered(*args: str) -> str:
        done = mine.cli(*args, "--cluster", cluster, "--wait", "--timeout", "600")
        assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
        return done.stdout

    plain = Daemon(mine, tmp_path / "plain.log", extra_env=env)
    plain.start()
    try:
        await plain.wait_ready()
        await answered("topology", "load", str(heketi_file(tmp_path / "t.json", guests)))
        await answered("request", "provision", "--size", "1GiB", "--name", "origin")
        await answered("snapshot", "create", "--volume", "origin", "--name", "origin_s")
    finally:
        plain.stop()
    for point in CRASH_POINTS:
        step = point.split(":")[0]
        data: models.Model
        if step == "gluster_snapshot_create":
            type_, data = catalog.SNAPSHOT_CREATE_REQUESTED, models.CreateSnapshot(cluster=cluster, volume="origin")
        elif step == "setfattr":
            data = models.CloneVolume(cluster=cluster, name="clone_c", from_snapshot="origin_s")
            type_ = catalog.CLONE_REQUESTED
        else:
            type_, data = (
                catalog.PROVISION_REQUESTED,
                models.ProvisionVolume(cluster=cluster, size=GiB, name=f"p_{step.replace('.', '_')}"),
            )
        request = new_event(type_, data, source="/tests")
        crashing = Daemon(mine, tmp_path / f"{step}.log", extra_env={**env, "PROVISIONER_WORKER__CRASH_AFTER": point})
        crashing.start()
        await crashing.wait_ready()
        async with TopicReader(mine, mine.topic("results")) as results_topic:
            value, headers = encode(request)
            await produce(mine, value, key=cluster.encode(), headers=headers)
            assert crashing.process is not None
            code = await asyncio.to_thread(crashing.process.wait, 600)
            assert code == CRASH_EXIT_CODE, f"the daemon did not crash at {point}:\n{crashing.tail()}"
            after = Daemon(mine, tmp_path / f"{step}.after.log", extra_env=env)
            after.start()
            try:
                result = await results_topic.wait_result(request.id, timeout=600)
                await after.wait_ready()
                for _ in range(6):
                    await results_topic.poll(0.5)
                assert results_topic.terminal_count(request.id) == 1, f"more than one result after a crash at {point}"
                assert catalog.is_success(result.type), f"{point}: {result.data}"
                mine.assert_no_drift(cluster)
            finally:
                after.stop()
