from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from provisioner.csi.events import ClaimRef, MountEvents
from provisioner.csi.node import NodeConfig, NodeService
from provisioner.csi.state import StateStore
from tests.unit.csi.fakes import KUBELET, FakeMounter


@dataclass
class FakeCluster:
    """The Kubernetes side of MountEvents: one PV -> claim mapping and the events posted."""

    claims: dict[str, ClaimRef] = field(default_factory=dict)
    created: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    bumped: list[tuple[str, str, int, str]] = field(default_factory=list)
    labels: dict[tuple[str, str], str] = field(default_factory=dict)
    fail: Exception | None = None

    async def claim_of(self, driver: str, volume_id: str) -> ClaimRef | None:
        if self.fail is not None:
            raise self.fail
        return self.claims.get(volume_id)

    async def create_event(self, namespace: str, body: dict[str, Any]) -> str:
        self.created.append((namespace, body))
        return str(body["metadata"]["name"])

    async def bump_event(self, namespace: str, name: str, *, count: int, last: str, message: str) -> None:
        self.bumped.append((namespace, name, count, message))

    async def node_label(self, node: str, key: str) -> str | None:
        return self.labels.get((node, key))


@pytest.fixture
def mounter() -> FakeMounter:
    return FakeMounter()


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
def state(tmp_path: Path) -> StateStore:
    store = StateStore(tmp_path / "volumes")
    store.ensure()
    return store


@pytest.fixture
def node(mounter: FakeMounter, state: StateStore, cluster: FakeCluster) -> NodeService:
    config = NodeConfig(
        driver_name="glusterfs.gluster.org",
        node_id="node-a",
        path_roots=(KUBELET,),
        topology_key="topology.glusterfs.gluster.org/zone",
        zone="z1",
    )
    events = MountEvents(cluster, driver="glusterfs.gluster.org", node_id="node-a")
    return NodeService(config, mounter=mounter, state=state, events=events)
