"""End to end on the real stack: Kafka event in, replicated gluster volume on three real nodes out."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from devstack.stack import Daemon, Stack, TopicReader, produce
from provisioner.events import catalog, models, results
from provisioner.events.envelope import decode_result, encode, header, new_event
from provisioner.storage import commands
from provisioner.storage.parsing import parse_volume_info

pytestmark = pytest.mark.integration
GiB = 1024**3
TOPOLOGY = Path(__file__).resolve().parents[2] / "deploy" / "dev" / "topology.json"


@pytest.fixture(scope="module")
async def loaded(stack: Stack, daemon: Daemon) -> Daemon:
    result = stack.cli("topology", "load", str(TOPOLOGY), "--wait", "--timeout", "60")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "topology of cluster dev now: 3 nodes, 6 devices" in result.stdout
    return daemon


def host_path(stack: Stack, node_ip: str, node_path: str) -> Path:
    """Where a node's /srv path lives on the host (the sandbox bind-mounts it from here)."""
    index = stack.nodes.index(node_ip) + 1
    return Path(stack.gluster["GLUSTER_SSH_KEY"]).parents[1] / "nodes" / f"node{index}" / node_path.lstrip("/")


async def test_provision_write_and_delete_a_replica_three_volume(stack: Stack, loaded: Daemon, tmp_path: Path) -> None:
    name = f"e2e_{uuid.uuid4().hex[:8]}"
    request = new_event(
        catalog.PROVISION_REQUESTED,
        models.ProvisionVolume(cluster="dev", size=GiB, name=name, gid=2001),
        source="/tests/e2e",
    )
    value, headers = encode(request)
    async with TopicReader(stack, stack.topic("results")) as reader:
        await produce(stack, value, key=b"dev", headers=headers)
        result = await reader.wait_result(request.id)

    assert result.type == "org.gluster.volume.provision.succeeded.v1", result.data
    progress = [decode_result(v) for _, v, _ in reader.records]
    mine = [e for e in progress if e.type.endswith(".progressed.v1") and e.data.request_id == request.id]  # type: ignore[attr-defined]
    assert [e.data.step for e in mine] == ["bricks_ready"]  # type: ignore[attr-defined]
    assert isinstance(result.data, results.VolumeProvisioned)
    volume = result.data.volume
    assert volume.name == name
    assert len(volume.bricks) == 3
    assert len({b.host for b in volume.bricks}) == 3, "three bricks on three different nodes"

    shown = stack.cli("state", "show", "--cluster", "dev")
    assert shown.returncode == 0, shown.stderr
    [row] = [line for line in shown.stdout.splitlines() if line.startswith(name)]
    assert row.split()[1:4] == ["dev", "online", "1GiB"] and volume.volume_id in row

    ssh = stack.ssh()
    try:
        info = await ssh.run(stack.nodes[0], commands.volume_info(name, timeout=30), timeout=60)
        [gluster_volume] = parse_volume_info(info.stdout)
        assert gluster_volume.status == "Started"
        assert gluster_volume.type == "Replicate"
        assert {(b.host, b.path) for b in gluster_volume.bricks} == {(b.host, b.path) for b in volume.bricks}
        assert len({b.host for b in gluster_volume.bricks}) == 3
        assert gluster_volume.options["user.provisioner.id"] == volume.volume_id

        # A file written through a FUSE mount on the host lands in all three bricks.
        mount_point = tmp_path / "mnt"
        mount_point.mkdir()
        payload = f"hello from {name}\n"
        subprocess.run(
            [
                "mount",
                "-n",
                "-t",
                "glusterfs",
                "-o",
                f"log-file={tmp_path / 'client.log'}",
                volume.mount,
                str(mount_point),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        try:
            (mount_point / "hello.txt").write_text(payload)
            assert (mount_point / "hello.txt").read_text() == payload
        finally:
            subprocess.run(["umount", "-n", str(mount_point)], check=True, timeout=60)
        for brick in volume.bricks:
            copy = await ssh.run(brick.host, ("cat", "--", f"{brick.path}/hello.txt"), timeout=30)
            assert copy.stdout == payload, brick.host
            group = await ssh.run(brick.host, ("stat", "-c", "%g %a", "--", brick.path), timeout=30)
            assert group.stdout.split() == ["2001", "2775"]
            fstab = await ssh.run(brick.host, ("cat", "--", "/var/lib/provisioner/fstab"), timeout=30)
            assert f" {brick.path.removesuffix('/brick')} xfs loop," in fstab.stdout, brick.host

        # Delete: the volume, brick filesystems, loop devices and images are gone from every node.
        deleted = stack.cli("request", "delete", "--cluster", "dev", "--name", name, "--wait", "--timeout", "120")
        assert deleted.returncode == 0, deleted.stderr + deleted.stdout
        assert f"deleted {name}" in deleted.stdout

        gone = await ssh.run(stack.nodes[0], commands.volume_info(name, timeout=30), timeout=60)
        assert "does not exist" in gone.stdout
        loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True).stdout
        for brick in volume.bricks:
            mount = brick.path.removesuffix("/brick")
            mounted = await ssh.run(brick.host, commands.is_mounted(mount), timeout=30, check=False)
            assert mounted.exit_status != 0, f"{mount} still mounted on {brick.host}"
            leftovers = await ssh.run(brick.host, ("find", "/srv/devices", "-name", f"brick_{brick.id}*"), timeout=30)
            assert leftovers.stdout == "", leftovers.stdout
            exists = await ssh.run(brick.host, ("test", "-e", mount), timeout=30, check=False)
            assert exists.exit_status != 0, f"{mount} still exists on {brick.host}"
            assert f"brick_{brick.id}" not in loops
            fstab = await ssh.run(brick.host, ("cat", "--", "/var/lib/provisioner/fstab"), timeout=30)
            assert f" {mount} " not in fstab.stdout, brick.host
    finally:
        await ssh.close()


async def test_malformed_events_go_to_the_dead_letter_topic(stack: Stack, loaded: Daemon) -> None:
    def event(data: dict[str, object], type_: str = catalog.PROVISION_REQUESTED) -> bytes:
        return json.dumps(
            {"specversion": "1.0", "id": uuid.uuid4().hex, "source": "/tests", "type": type_, "data": data}
        ).encode()

    bad = {
        "MalformedJson": (b"{this is not json", b"dev"),
        "UnknownType": (event({}, type_="org.gluster.volume.explode.requested.v1"), b"dev"),
        "InvalidData": (event({"cluster": "dev", "size": 1, "name": "no/slashes"}), b"dev"),
        "KeyMismatch": (event({"cluster": "dev", "size": GiB}), b"other"),
    }
    valid = new_event(
        catalog.DELETE_REQUESTED, models.DeleteVolume(cluster="dev", name="never-existed"), source="/tests"
    )
    async with TopicReader(stack, stack.topic("results")) as reader:
        for value, key in bad.values():
            await produce(stack, value, key=key, headers=[("trace", b"kept")])
        valid_value, valid_headers = encode(valid)
        await produce(stack, valid_value, key=b"dev", headers=valid_headers)
        answer = await reader.wait_result(valid.id, timeout=60)
    assert isinstance(answer.data, results.VolumeDeleted) and not answer.data.existed

    async with TopicReader(stack, stack.topic("dlq")) as dlq:
        for _ in range(20):
            await dlq.poll()
            if len(dlq.records) >= len(bad):
                break
    reasons = {header(h, "dlq_reason"): (k, v, h) for k, v, h in dlq.records}
    assert set(reasons) == set(bad)
    for reason, (value, key) in bad.items():
        got_key, got_value, got_headers = reasons[reason]
        assert (got_value, got_key) == (value, key), "original bytes are kept"
        assert header(got_headers, "trace") == "kept", "original headers are kept"
        assert header(got_headers, "dlq_message")
    metrics = await loaded.metrics()
    assert 'provisioner_dead_letters_total{reason="KeyMismatch"} 1.0' in metrics


async def test_expand_a_replica_three_volume_by_a_set(stack: Stack, loaded: Daemon, tmp_path: Path) -> None:
    name = f"grow_{uuid.uuid4().hex[:8]}"
    created = stack.cli("request", "provision", "--cluster", "dev", "--size", "1GiB", "--name", name, "--wait")
    assert created.returncode == 0, created.stderr + created.stdout
    request = new_event(
        catalog.EXPAND_REQUESTED, models.ExpandVolume(cluster="dev", name=name, size=2 * GiB), source="/tests/e2e"
    )
    value, headers = encode(request)
    async with TopicReader(stack, stack.topic("results")) as reader:
        await produce(stack, value, key=b"dev", headers=headers)
        result = await reader.wait_result(request.id)
    assert isinstance(result.data, results.VolumeExpanded), result.data
    assert result.data.added_bricks == 3
    ssh = stack.ssh()
    try:
        info = await ssh.run(stack.nodes[0], commands.volume_info(name, timeout=30), timeout=60)
        [grown] = parse_volume_info(info.stdout)
        assert grown.type == "Distributed-Replicate"
        assert grown.brick_count == 6
        for index in (0, 3):
            assert len({b.host for b in grown.bricks[index : index + 3]}) == 3
    finally:
        await ssh.close()
    deleted = stack.cli("request", "delete", "--cluster", "dev", "--name", name, "--wait")
    assert deleted.returncode == 0, deleted.stderr + deleted.stdout
    for brick in result.data.volume.bricks:
        mount = brick.path.removesuffix("/brick")
        ssh = stack.ssh()
        try:
            exists = await ssh.run(brick.host, ("test", "-e", mount), timeout=30, check=False)
        finally:
            await ssh.close()
        assert exists.exit_status != 0, f"{mount} left on {brick.host}"


async def test_node_add_disable_enable_on_the_real_pool(stack: Stack, loaded: Daemon, tmp_path: Path) -> None:
    """A cluster of two nodes cannot hold replica 3; adding the third (peer probe) makes it fit."""
    cluster = f"grow-{uuid.uuid4().hex[:6]}"
    document = json.loads(TOPOLOGY.read_text())["clusters"][0]
    document = {"clusters": [{"id": cluster, "nodes": document["nodes"][:2]}]}
    path = tmp_path / f"{cluster}.json"
    path.write_text(json.dumps(document))
    assert stack.cli("topology", "load", str(path), "--wait").returncode == 0
    name = f"n3_{uuid.uuid4().hex[:8]}"
    provision = ("request", "provision", "--cluster", cluster, "--size", "1GiB", "--name", name, "--wait")
    refused = stack.cli(*provision)
    assert refused.returncode == 1 and "NotEnoughNodes" in refused.stdout, refused.stdout
    third = stack.nodes[2]
    added = stack.cli(
        "node", "add", "--cluster", cluster, "--manage", third, "--device", "/srv/devices/dev1:100GiB", "--wait"
    )
    assert added.returncode == 0 and "now: 3 nodes, 5 devices" in added.stdout, added.stdout + added.stderr
    disabled = stack.cli("node", "disable", "--cluster", cluster, "--host", third, "--wait")
    assert disabled.returncode == 0, disabled.stdout
    assert "NotEnoughNodes" in stack.cli(*provision).stdout
    assert stack.cli("node", "enable", "--cluster", cluster, "--host", third, "--wait").returncode == 0
    created = stack.cli(*provision)
    assert created.returncode == 0 and f"brick {third}:" in created.stdout, created.stdout
    in_use = stack.cli("node", "remove", "--cluster", cluster, "--host", third, "--wait")
    assert in_use.returncode == 1 and "DeviceInUse" in in_use.stdout
    assert stack.cli("request", "delete", "--cluster", cluster, "--name", name, "--wait").returncode == 0
