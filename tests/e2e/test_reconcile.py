"""Orphans planted by hand on the real nodes are found by ``reconcile`` and removed by ``--repair``.

Planted: a brick image carrying our owner tag and a volume id no record names (formatted and mounted
like a real brick), and a started gluster volume carrying our id and owner tag that desired state does
not know. Decoys carry another deployment's owner tag; they must be neither reported nor touched, and
neither must the real volume this deployment made.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from devstack.stack import Daemon, Stack, TopicReader, load_topology, produce
from provisioner.events import catalog, models, results
from provisioner.events.envelope import encode, new_event
from provisioner.executor.ssh import SshExecutor
from provisioner.storage import commands, tags
from provisioner.storage.parsing import parse_volume_info

pytestmark = pytest.mark.integration
GiB = 1024**3
CLUSTER = "recon"
OTHER_OWNER = "someone-else.state"


@pytest_asyncio.fixture(scope="module")
async def own(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Stack, Daemon]]:
    mine = dataclasses.replace(stack, prefix=f"t{uuid.uuid4().hex[:8]}")
    log = tmp_path_factory.mktemp("reconcile") / "daemon.log"
    daemon = Daemon(mine, log, extra_env={"PROVISIONER_WORKER__RECONCILE_INTERVAL": "2"})
    daemon.start()
    try:
        await daemon.wait_ready()
        await load_topology(mine, CLUSTER)
        yield mine, daemon
    finally:
        daemon.stop()


async def drift_counted(daemon: Daemon, kind: str) -> float:
    for line in (await daemon.metrics()).splitlines():
        if line.startswith(f'provisioner_reconcile_drift_found_total{{kind="{kind}"}}'):
            return float(line.split()[-1])
    return 0.0


def reconcile(stack: Stack, *flags: str) -> tuple[int, dict[str, Any]]:
    done = stack.cli("reconcile", "--cluster", CLUSTER, "--json", *flags)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


class Planter:
    """Makes (and always cleans up) bricks and volumes by hand, as an operator or a crash would leave them."""

    def __init__(self, stack: Stack, ssh: SshExecutor, topology: dict[str, Any]) -> None:
        self.stack = stack
        self.ssh = ssh
        self.topology = topology
        self.mounts: list[tuple[str, str, str]] = []  # (host, mount point, image)
        self.volumes: list[tuple[str, str]] = []  # (host, name)

    async def run(self, host: str, *argv: str, check: bool = True) -> str:
        done = await self.ssh.run(host, argv, timeout=120, check=check)
        return done.stdout

    async def brick(self, node: int, *, owner: str) -> tuple[str, str, str]:
        """A mounted XFS brick image tagged like ours; returns (host, brick id, image path)."""
        entry = self.topology["nodes"][node]
        device = entry["devices"][0]
        host, brick = entry["manage"], uuid.uuid4().hex
        image = f"{device['name']}/brick_{brick}.img"
        mount_point = f"{self.topology['brick_root']}/vg_{device['id']}/brick_{brick}"
        self.mounts.append((host, mount_point, image))
        await self.run(host, "truncate", "-s", "400M", image)
        await self.run(host, *commands.tag_file(image, tags.IMAGE_VOLUME_XATTR, uuid.uuid4().hex))
        await self.run(host, *commands.tag_file(image, tags.IMAGE_OWNER_XATTR, owner))
        await self.run(host, *commands.make_xfs(image))
        await self.run(host, *commands.mkdir(mount_point))
        await self.run(host, *commands.mount_loop(image, mount_point))
        return host, brick, image

    async def volume(self, node: int, *, owner: str) -> str:
        """A started one-brick gluster volume with our id option and the given owner tag."""
        entry = self.topology["nodes"][node]
        host, name = entry["manage"], f"planted_{uuid.uuid4().hex[:8]}"
        brick = f"{entry['devices'][0]['name']}/{name}"
        self.volumes.append((host, name))
        await self.run(host, "mkdir", "-p", brick)
        for argv in (
            ("volume", "create", name, f"{entry['storage']}:{brick}", "force"),
            ("volume", "set", name, "user.provisioner.id", uuid.uuid4().hex),
            ("volume", "set", name, "user.provisioner.owner", owner),
            ("volume", "start", name),
        ):
            await self.run(host, "gluster", "--mode=script", *argv)
        return name

    async def mounted(self, host: str, mount_point: str) -> bool:
        done = await self.ssh.run(host, commands.is_mounted(mount_point), timeout=30, check=False)
        return done.exit_status == 0

    async def exists(self, host: str, path: str) -> bool:
        done = await self.ssh.run(host, ("test", "-e", path), timeout=30, check=False)
        return done.exit_status == 0

    async def gluster_has(self, host: str, name: str) -> bool:
        done = await self.ssh.run(host, commands.volume_info(name, timeout=30), timeout=60, check=False)
        return done.exit_status == 0 and bool(parse_volume_info(done.stdout))

    async def clean(self) -> None:
        for host, name in self.volumes:
            await self.run(host, "gluster", "--mode=script", "volume", "stop", name, "force", check=False)
            await self.run(host, "gluster", "--mode=script", "volume", "delete", name, check=False)
        for host, mount_point, image in self.mounts:
            await self.run(host, "umount", mount_point, check=False)
            await self.run(host, "rm", "-f", image, check=False)
            await self.run(host, "rmdir", mount_point, check=False)


def topology_of(stack: Stack) -> dict[str, Any]:
    shown = stack.cli("state", "show", "--cluster", CLUSTER, "--json")
    assert shown.returncode == 0, shown.stderr
    [cluster] = json.loads(shown.stdout)["clusters"]
    return dict(cluster)


async def test_planted_orphans_are_reported_then_repaired(own: tuple[Stack, Daemon]) -> None:
    stack, daemon = own
    request = new_event(
        catalog.PROVISION_REQUESTED, models.ProvisionVolume(cluster=CLUSTER, size=GiB), source="/tests/reconcile"
    )
    value, headers = encode(request)
    async with TopicReader(stack, stack.topic("results")) as reader:
        await produce(stack, value, key=CLUSTER.encode(), headers=headers)
        result = await reader.wait_result(request.id)
    assert isinstance(result.data, results.VolumeProvisioned), result.data
    real = result.data.volume

    code, report = reconcile(stack)
    assert (code, report["drift"]) == (0, []), "a fresh volume is no drift"

    ssh = stack.ssh()
    planter = Planter(stack, ssh, topology_of(stack))
    try:
        owner = stack.topic("state")
        host, brick, image = await planter.brick(0, owner=owner)
        decoy_host, _, decoy_image = await planter.brick(1, owner=OTHER_OWNER)
        orphan = await planter.volume(1, owner=owner)
        decoy = await planter.volume(2, owner=OTHER_OWNER)

        # The daemon's own passes (every 2 s here) count them without touching them.
        for _ in range(60):
            if await drift_counted(daemon, "orphan_brick") and await drift_counted(daemon, "orphan_volume"):
                break
            await asyncio.sleep(1)
        else:
            raise AssertionError(f"the daemon's reconcile passes did not count the orphans:\n{daemon.tail()}")

        code, report = reconcile(stack)
        found = {(d["kind"], d["subject"]) for d in report["drift"]}
        assert code == 1
        assert found == {("orphan_brick", brick), ("orphan_volume", orphan)}, report
        [brick_drift] = [d for d in report["drift"] if d["kind"] == "orphan_brick"]
        assert brick_drift["node"] == host

        code, report = reconcile(stack, "--repair")
        assert code == 0, report
        assert {d["outcome"] for d in report["drift"]} == {"repaired"}
        assert not await planter.exists(host, image)
        assert not await planter.mounted(host, planter.mounts[0][1])
        assert not await planter.gluster_has(planter.volumes[0][0], orphan)

        # Another deployment's things and our real volume are untouched.
        assert await planter.exists(decoy_host, decoy_image)
        assert await planter.mounted(decoy_host, planter.mounts[1][1])
        assert await planter.gluster_has(planter.volumes[1][0], decoy)
        assert await planter.gluster_has(real.bricks[0].host, real.name)

        code, report = reconcile(stack)
        assert (code, report["drift"]) == (0, []), report
    finally:
        await planter.clean()
        await ssh.close()
    deleted = stack.cli("request", "delete", "--cluster", CLUSTER, "--name", real.name, "--wait", "--timeout", "180")
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
