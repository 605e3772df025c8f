"""Crash injection on the real stack: the daemon dies right after each distinct node step of a create,
and in the middle of each of its Kafka transactions (records on the broker, commit not asked; and
committed, nothing applied in memory), is restarted, and the request gets exactly one result, the
volume ends complete with ``reconcile`` reporting no drift; deleting it then leaves nothing on the
nodes, and ``reconcile`` still reports none."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import pytest

from devstack.stack import Daemon, Stack, TopicReader, load_topology, produce
from provisioner.events import catalog, models, results
from provisioner.events.envelope import Event, encode, new_event
from provisioner.executor.fault import CRASH_EXIT_CODE, TRANSACTION_POINTS
from provisioner.storage import commands
from provisioner.storage.parsing import parse_volume_info

pytestmark = pytest.mark.integration
GiB = 1024**3

STEPS = [
    "mountpoint",
    "mkdir",
    "truncate",
    "setfattr",
    "mkfs.xfs",
    "mount",
    "gluster_volume_create",
    "gluster_volume_set",
    "gluster_volume_start",
]
# The crashing daemon's transactions: the create's intent (1), its progress event (2) and its result
# with the offset (3). The topology is loaded before, by a daemon of its own (a load runs node
# steps too: a directory per file device).
TRANSACTIONS = [f"{phase}:{n}" for phase in TRANSACTION_POINTS for n in (1, 2, 3)]
POINTS = [f"{step}:1" for step in STEPS] + TRANSACTIONS


@pytest.fixture(scope="module")
async def own(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    """Topics of this module alone, with cluster ``crash`` loaded."""
    mine = dataclasses.replace(stack, prefix=f"t{uuid.uuid4().hex[:8]}")
    loader = Daemon(mine, tmp_path_factory.mktemp("crash") / "load.log")
    loader.start()
    try:
        await loader.wait_ready()
        await load_topology(mine, "crash")
    finally:
        loader.stop()
    return mine


@pytest.mark.parametrize("point", POINTS)
async def test_a_crash_at_any_point_of_a_create_leaves_one_result_and_no_drift(
    own: Stack, tmp_path: Path, point: str
) -> None:
    stack = own
    step = point.split(":")[0]
    crashing = Daemon(stack, tmp_path / "crash.log", extra_env={"PROVISIONER_WORKER__CRASH_AFTER": point})
    crashing.start()
    await crashing.wait_ready()
    name = f"c_{step.replace('.', '_')[:12]}_{uuid.uuid4().hex[:6]}"
    request = new_event(
        catalog.PROVISION_REQUESTED, models.ProvisionVolume(cluster="crash", size=GiB, name=name), source="/tests"
    )
    value, headers = encode(request)
    async with TopicReader(stack, stack.topic("results")) as results:
        await produce(stack, value, key=b"crash", headers=headers)
        assert crashing.process is not None
        code = crashing.process.wait(timeout=120)
        assert code == CRASH_EXIT_CODE, f"the daemon did not crash at {point}:\n{crashing.tail()}"
        daemon = Daemon(stack, tmp_path / "after.log")
        daemon.start()
        try:
            result = await results.wait_result(request.id, timeout=180)
            await daemon.wait_ready()
            for _ in range(6):  # a second answer would come now, from the redelivered request
                await results.poll(0.5)
            assert results.terminal_count(request.id) == 1, f"more than one result after a crash at {point}"
        except BaseException:
            daemon.stop()
            raise
    try:
        await _check_then_delete(stack, name, result)
    finally:
        daemon.stop()


async def _check_then_delete(stack: Stack, name: str, result: Event) -> None:
    assert isinstance(result.data, results.VolumeProvisioned), result.data
    volume = result.data.volume
    ssh = stack.ssh()
    try:
        info = await ssh.run(stack.nodes[0], commands.volume_info(name, timeout=60), timeout=90)
        [gluster_volume] = parse_volume_info(info.stdout)
        assert gluster_volume.status == "Started"
        assert {(b.host, b.path) for b in gluster_volume.bricks} == {(b.host, b.path) for b in volume.bricks}
        assert gluster_volume.options["user.provisioner.id"] == volume.volume_id
        stack.assert_no_drift("crash")
        deleted = stack.cli("request", "delete", "--cluster", "crash", "--name", name, "--wait", "--timeout", "180")
        assert deleted.returncode == 0, deleted.stdout + deleted.stderr
        for brick in volume.bricks:
            left = await ssh.run(
                brick.host,
                ("find", "/srv/devices", "/var/lib/provisioner/mounts", "-name", f"brick_{brick.id}*"),
                timeout=30,
            )
            assert left.stdout == "", f"left on {brick.host}: {left.stdout}"
        stack.assert_no_drift("crash")
    finally:
        await ssh.close()
