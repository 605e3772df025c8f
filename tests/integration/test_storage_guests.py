"""The QEMU storage guests: verified SSH, empty real block devices, device-mapper thin provisioning
with Heketi's brick layout, and a trusted pool of their own."""

from __future__ import annotations

import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from devstack.guests import Guests, load_guests
from provisioner.errors import HostKeyRejected
from provisioner.executor.ssh import SshExecutor

pytestmark = pytest.mark.integration

NAMESPACE_NODES = {"10.77.0.11", "10.77.0.12", "10.77.0.13"}
VG = "vg_test"  # what the LVM test makes on the first guest's first disk
MOUNTS = ("/run/test-bricks/snap_x", "/run/test-bricks/brick_x")


@pytest.fixture(scope="module")
def guests() -> Guests:
    return load_guests()


@pytest_asyncio.fixture(scope="module")
async def ssh(guests: Guests) -> AsyncIterator[SshExecutor]:
    executor = guests.ssh()
    try:
        # An earlier run cut off mid-sequence (the guest unreachable) could not clean up after
        # itself; remove what it made, and only that: a PV of our VG on our disk.
        node, disk = guests.nodes[0], guests.disks[0]
        owner = await executor.run(node, ("lvm", "pvs", "--noheadings", "-o", "vg_name", disk), timeout=60, check=False)
        if owner.ok and owner.stdout.strip() == VG:
            await cleanup(executor, node, disk, VG, list(MOUNTS))
        yield executor
    finally:
        await executor.close()


async def test_every_guest_answers_as_itself_with_a_verified_host_key(guests: Guests, ssh: SshExecutor) -> None:
    names = [(await ssh.run(node, ("hostname",), timeout=30)).stdout.strip() for node in guests.nodes]
    assert names == guests.names
    assert len(guests.nodes) >= 1
    known = guests.known_hosts.read_text().split()
    assert all(node in known for node in guests.nodes), "every guest has its own line in known_hosts"


async def test_a_guest_with_another_key_is_refused(guests: Guests, tmp_path: Path) -> None:
    impostor = tmp_path / "impostor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)], check=True)
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{guests.nodes[0]} {impostor.with_suffix('.pub').read_text()}")
    marker = f"/tmp/should-not-exist-{uuid.uuid4().hex}"
    refused = guests.ssh(known_hosts=wrong)
    try:
        with pytest.raises(HostKeyRejected):
            await refused.run(guests.nodes[0], ("touch", marker), timeout=30)
    finally:
        await refused.close()


async def test_every_guest_has_its_data_disks_as_empty_raw_block_devices(guests: Guests, ssh: SshExecutor) -> None:
    assert guests.disks == ["/dev/vdb", "/dev/vdc"]
    for node in guests.nodes:
        for disk in guests.disks:
            name = disk.removeprefix("/dev/")
            kind = await ssh.run(node, ("lsblk", "--nodeps", "--noheadings", "-o", "TYPE,RO", disk), timeout=30)
            assert kind.stdout.split() == ["disk", "0"], f"{node}:{disk} is a writable whole disk"
            block = await ssh.run(node, ("test", "-b", disk), timeout=30, check=False)
            assert block.exit_status == 0, f"{node}:{disk} is a block device"
            signatures = await ssh.run(node, ("wipefs", "--no-act", "--noheadings", disk), timeout=30)
            assert signatures.stdout == "", f"{node}:{disk} has signatures: {signatures.stdout}"
            probe = await ssh.run(node, ("blkid", "-p", disk), timeout=30, check=False)
            assert probe.exit_status == 2, f"{node}:{disk}: blkid found something: {probe.stdout}"
            holders = await ssh.run(node, ("ls", "-A", f"/sys/block/{name}/holders"), timeout=30)
            assert holders.stdout == "", f"{node}:{disk} is held by {holders.stdout}"
            mounts = await ssh.run(node, ("findmnt", "--noheadings", "--source", disk), timeout=30, check=False)
            assert mounts.stdout == "", f"{node}:{disk} is mounted: {mounts.stdout}"


async def test_dm_thin_pool_loads_on_every_guest(guests: Guests, ssh: SshExecutor) -> None:
    for node in guests.nodes:
        await ssh.run(node, ("modprobe", "dm_thin_pool"), timeout=60)
        targets = (await ssh.run(node, ("dmsetup", "targets"), timeout=30)).stdout.split()
        assert "thin-pool" in targets, f"{node}: {targets}"
        assert "thin" in targets, f"{node}: {targets}"


async def test_heketi_brick_sequence_with_a_thin_snapshot_on_a_real_disk(guests: Guests, ssh: SshExecutor) -> None:
    """pvcreate / vgcreate / thin pool + thin LV / Heketi's XFS / mount / thin snapshot, then all of it
    undone: the argv the provisioner's lvm backend issues, on the first guest's /dev/vdb."""
    node, disk = guests.nodes[0], guests.disks[0]
    vg, pool, lv, snap = VG, "tp_x", "brick_x", "snap_x"
    snap_mount, mount_point = MOUNTS
    steps: list[tuple[str, float]] = []

    async def step(label: str, *argv: str, timeout: float = 120) -> str:
        started = time.monotonic()
        result = await ssh.run(node, argv, timeout=timeout)
        steps.append((label, time.monotonic() - started))
        return result.stdout

    try:
        await step("pvcreate", "lvm", "pvcreate", "-qq", "--metadatasize=128M", "--dataalignment=256K", disk)
        await step("vgcreate", "lvm", "vgcreate", "-qq", "--physicalextentsize=4M", "--autobackup=n", vg, disk)
        await step(
            "lvcreate thin pool + thin LV",
            *("lvm", "lvcreate", "-qq", "--autobackup=n", "--poolmetadatasize", "8192K", "--chunksize", "256K"),
            *("--size", "1048576K", "--thin", f"{vg}/{pool}", "--virtualsize", "1048576K", "--name", lv),
        )
        device = f"/dev/mapper/{vg}-{lv}"
        await step("mkfs.xfs", "mkfs.xfs", "-f", "-q", "-i", "size=512", "-n", "size=8192", "--", device)
        await step("mkdir", "mkdir", "-p", "--", mount_point)
        await step("mount", "mount", "-o", "rw,inode64,noatime,nouuid", "--", device, mount_point)
        await step("write", "sh", "-c", 'echo brick-data >"$1/file" && sync', "sh", mount_point)
        await step("lvcreate snapshot", "lvm", "lvcreate", "-qq", "--autobackup=n", "-s", f"{vg}/{lv}", "-n", snap)

        info = await step("xfs_info", "xfs_info", mount_point)
        assert "isize=512" in info, info
        assert "bsize=8192" in info.split("naming")[1], info
        report = await step(
            "lvs",
            *("lvm", "lvs", "--noheadings", "--separator", ":", "-o", "lv_name,lv_attr,pool_lv,origin", vg),
        )
        rows = {fields[0]: fields for fields in (line.strip().split(":") for line in report.splitlines())}
        assert rows[pool][1].startswith("t"), rows  # thin pool
        assert rows[lv][1].startswith("V") and rows[lv][2] == pool, rows  # thin volume in the pool
        assert rows[snap][1].startswith("V") and rows[snap][2:] == [pool, lv], rows  # thin snapshot of it
        # The snapshot is a complete, separate filesystem with the origin's data.
        await step("activate snapshot", "lvm", "lvchange", "-ay", "-K", f"{vg}/{snap}")
        await step("mkdir", "mkdir", "-p", "--", snap_mount)
        await step("mount snapshot", "mount", "-o", "ro,nouuid", "--", f"/dev/mapper/{vg}-{snap}", snap_mount)
        assert (await step("read snapshot", "cat", f"{snap_mount}/file")).strip() == "brick-data"
        await step("umount snapshot", "umount", "--", snap_mount)
    finally:
        started = time.monotonic()
        await cleanup(ssh, node, disk, vg, list(MOUNTS))
        steps.append(("clean-up", time.monotonic() - started))
    left = await ssh.run(node, ("wipefs", "--no-act", "--noheadings", disk), timeout=30)
    assert left.stdout == "", f"{node}:{disk} still has signatures after the clean-up: {left.stdout}"
    print(f"\nLVM sequence on {node}:{disk}: " + ", ".join(f"{label} {seconds:.2f}s" for label, seconds in steps))
    print(f"total {sum(seconds for _, seconds in steps):.1f}s")


async def cleanup(ssh: SshExecutor, node: str, disk: str, vg: str, mounts: list[str]) -> None:
    """Undo the sequence whatever step it reached: unmount, remove the VG's LVs, the VG, the PV, wipe."""
    for mount_point in mounts:
        if (await ssh.run(node, ("mountpoint", "-q", "--", mount_point), timeout=30, check=False)).ok:
            await ssh.run(node, ("umount", "--", mount_point), timeout=60)
        await ssh.run(node, ("rmdir", "--", mount_point), timeout=30, check=False)
    if (await ssh.run(node, ("lvm", "vgs", vg), timeout=60, check=False)).ok:
        await ssh.run(node, ("lvm", "vgremove", "-f", "-y", vg), timeout=120)
    if (await ssh.run(node, ("lvm", "pvs", disk), timeout=60, check=False)).ok:
        await ssh.run(node, ("lvm", "pvremove", "-y", disk), timeout=60)
    await ssh.run(node, ("wipefs", "-a", "-q", disk), timeout=60)


async def test_the_guests_form_a_pool_of_their_own(guests: Guests, ssh: SshExecutor) -> None:
    uuids = set()
    for node in guests.nodes:
        xml = (await ssh.run(node, ("gluster", "--mode=script", "--xml", "pool", "list"), timeout=60)).stdout
        root = ET.fromstring(xml)
        assert root.findtext("opRet") == "0", xml
        peers = root.findall("./peerStatus/peer")
        assert len(peers) == len(guests.nodes), xml
        assert all(peer.findtext("connected") == "1" for peer in peers), xml
        hostnames = {peer.findtext("hostname") for peer in peers}
        assert hostnames == {"localhost"} | (set(guests.nodes) - {node}), xml
        assert not hostnames & NAMESPACE_NODES, "the namespace nodes' pool is a separate one"
        uuids |= {peer.findtext("uuid") for peer in peers}
    assert len(uuids) == len(guests.nodes), "every guest has its own glusterd UUID"
