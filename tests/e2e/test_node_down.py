"""One storage node's glusterd or sshd stopped under a running daemon (issue #4), on the real nodes.

While node3's service is down: the daemon's ``provisioner_node_up`` for node3 turns 0, a replica-3
request fails with reason NodeDown naming 10.77.0.13 and why, and a replica-2 request succeeds on
the other two nodes. Once the service is back: node_up turns 1 and a new replica-3 request
succeeds on all three nodes.

The sandbox is shared with every other test: the service is always started again in a
``finally`` (``gluster.sh start-service`` waits for the pool to be whole), and the test waits for
``gluster.sh status`` to report every node healthy before it ends.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from devstack.stack import Daemon, Stack, TopicReader, gluster_sh, load_topology, must, produce
from provisioner.events import catalog, models, results
from provisioner.events.envelope import Event, encode, new_event

pytestmark = pytest.mark.integration
GiB = 1024**3
NODE3 = "10.77.0.13"
WHY = {"glusterd": "glusterd not answering", "sshd": "unreachable over SSH"}


@dataclass
class Outage:
    stack: Stack
    daemon: Daemon
    cluster: str


@pytest.fixture(scope="module")
async def outage(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Outage]:
    """A daemon of its own (own topics, probing every 0.5 s) with the dev nodes under a fresh cluster id."""
    mine = Stack(env=stack.env, gluster=stack.gluster)
    log = tmp_path_factory.mktemp("node-down") / "daemon.log"
    daemon = Daemon(mine, log, extra_env={"PROVISIONER_WORKER__HEALTH_INTERVAL": "0.5"})
    daemon.start()
    try:
        await daemon.wait_ready()
        cluster = f"down{uuid.uuid4().hex[:8]}"
        await load_topology(mine, cluster)
        yield Outage(mine, daemon, cluster)
    finally:
        code = daemon.stop()
        print(f"\n--- node-down daemon exited {code}; last lines ---\n{daemon.tail(40)}")


async def start_and_wait_healthy(service: str, *, timeout: float = 180) -> None:
    """Start node3's ``service`` again and wait until every node of the sandbox is healthy."""
    started = gluster_sh("start-service", "node3", service)
    deadline = time.monotonic() + timeout
    while True:
        status = gluster_sh("status", timeout=60)
        if status.returncode == 0:
            break
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the sandbox is not healthy {timeout:g}s after starting node3 {service}:\n{status.stdout}"
                f"{status.stderr[-2000:]}\nstart-service said:\n{started.stderr[-2000:]}"
            )
        if started.returncode != 0:  # try once more: the shared sandbox must come back
            started = gluster_sh("start-service", "node3", service)
        await asyncio.sleep(1)
    must(started)


async def node_up(daemon: Daemon, cluster: str, node: str) -> float | None:
    pattern = rf'^provisioner_node_up\{{cluster="{cluster}",node="{re.escape(node)}"\}} (\S+)$'
    found = re.search(pattern, await daemon.metrics(), re.MULTILINE)
    return float(found.group(1)) if found else None


async def wait_node_up(outage: Outage, value: float, *, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (seen := await node_up(outage.daemon, outage.cluster, NODE3)) != value:
        assert time.monotonic() < deadline, f"provisioner_node_up for {NODE3} is {seen}, not {value}, after {timeout}s"
        await asyncio.sleep(0.3)


async def send(outage: Outage, type_: str, data: models.Model) -> Event:
    """Publish one request and return its terminal result."""
    event = new_event(type_, data, source="/tests/e2e/node-down")
    value, headers = encode(event)
    async with TopicReader(outage.stack, outage.stack.topic("results")) as results:
        await produce(outage.stack, value, key=outage.cluster.encode(), headers=headers)
        return await results.wait_result(event.id, timeout=300)


async def provision(outage: Outage, name: str, replica: int) -> Event:
    durability = models.ReplicateSpec(replica=replica)
    data = models.ProvisionVolume(cluster=outage.cluster, size=GiB, name=name, durability=durability)
    return await send(outage, catalog.PROVISION_REQUESTED, data)


def hosts_of(result: Event) -> list[str]:
    assert isinstance(result.data, results.VolumeProvisioned), result.data
    return sorted(b.host for b in result.data.volume.bricks)


@pytest.mark.parametrize("service", ["glusterd", "sshd"])
async def test_a_stopped_service_keeps_new_bricks_off_its_node_until_it_returns(outage: Outage, service: str) -> None:
    name = f"nd_{service}_{uuid.uuid4().hex[:6]}"
    made: list[str] = []
    try:
        try:
            must(gluster_sh("stop-service", "node3", service, timeout=60))
            await wait_node_up(outage, 0)

            refused = await provision(outage, f"{name}_r3a", 3)
            assert isinstance(refused.data, results.RequestFailed), refused.data
            assert refused.data.reason == "NodeDown", refused.data
            assert f"down: {NODE3} ({WHY[service]}" in refused.data.message, refused.data.message
            assert refused.data.message.startswith("replica 3 needs 3 nodes, 2 are up"), refused.data.message

            pair = await provision(outage, f"{name}_r2", 2)
            assert pair.type.endswith(".succeeded.v1"), pair.data
            made.append(f"{name}_r2")
            assert hosts_of(pair) == ["10.77.0.11", "10.77.0.12"], "no brick on the node that is down"
        finally:
            await start_and_wait_healthy(service)

        await wait_node_up(outage, 1)
        three = await provision(outage, f"{name}_r3b", 3)
        assert three.type.endswith(".succeeded.v1"), three.data
        made.append(f"{name}_r3b")
        assert hosts_of(three) == ["10.77.0.11", "10.77.0.12", NODE3]
    finally:
        failures = []
        for volume in made:
            deleted = await send(
                outage, catalog.DELETE_REQUESTED, models.DeleteVolume(cluster=outage.cluster, name=volume)
            )
            if not deleted.type.endswith(".succeeded.v1"):
                failures.append(f"{volume}: {deleted.data}")
        assert not failures, f"could not delete: {failures}"
