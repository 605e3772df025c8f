"""VolumeOperations' plumbing: gluster CLI calls are bounded per cluster (one trusted pool)."""

from __future__ import annotations

import asyncio

from provisioner.domain import Cluster, ClusterId, Node, NodeId
from provisioner.executor import Argv, CommandResult
from provisioner.settings import StorageSettings
from provisioner.storage.operations import VolumeOperations
from tests.fakes import xml


class SlowGluster:
    """Answers every gluster call after a short wait, counting how many run at once."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0

    async def run(self, host: str, argv: Argv, *, timeout: float, check: bool = True) -> CommandResult:
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(0.01)
        self.running -= 1
        return CommandResult(host, argv, 0, xml(0, body="<volInfo><volumes></volumes></volInfo>"), "")

    async def close(self) -> None:
        return None


def cluster(name: str) -> Cluster:
    return Cluster(id=ClusterId(name), nodes=(Node(id=NodeId("a" * 32), manage=f"{name}-1", storage=f"{name}-1"),))


async def test_gluster_calls_are_bounded_per_cluster_not_across_clusters() -> None:
    nodes = SlowGluster()
    operations = VolumeOperations(nodes, StorageSettings(gluster_concurrency=2))
    await asyncio.gather(*(operations.all_volumes(cluster("one")) for _ in range(10)))
    assert nodes.most == 2
    nodes.most = 0
    await asyncio.gather(*(operations.all_volumes(cluster(c)) for c in ("one", "two", "three") for _ in range(4)))
    assert nodes.most == 6, "each cluster has its own bound"
