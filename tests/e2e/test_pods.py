"""Pods get their storage: the seed article's listings 7 to 9 on a real kubelet, through the project's
CSI driver, against the real gluster nodes.

A claim of a StorageClass of ours is Bound; a pod mounts it at ``/data`` and writes a file, and is
deleted; a second pod reads the file back; two pods share the claim at once (ReadWriteMany); the
file is on all three bricks; deleting the claim removes the PV and the gluster volume. And the
faults: the node plugin killed between stage and publish, a storage node's glusterd stopped under
a running pod, a mount that fails (an event on the claim names the server that refused).

Pods set ``nodeName`` (the dev stack has no scheduler) and use the locally built busybox image.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from devstack.claims import KubeWorld, bound, kube_world
from devstack.node import CsiPlugin, Node, ensure_csi_driver, load_node, wait_registered
from devstack.stack import Stack, gluster_sh, must

pytestmark = pytest.mark.integration
TEXT = "written by the first pod"


@dataclass
class Pods:
    world: KubeWorld
    node: Node
    plugin: CsiPlugin
    storage_class: str

    def restart_plugin(self, **settings: str) -> CsiPlugin:
        self.plugin.stop()
        self.world.processes.remove(self.plugin)
        log = self.world.tmp / f"csi-{len(self.world.processes)}.log"
        self.plugin = CsiPlugin(self.world.stack, log, self.node, self.world.kubeconfig, **settings)
        self.world.processes.append(self.plugin)
        self.plugin.start()
        return self.plugin

    async def pod(self, name: str, claim: str, script: str, *, read_only: bool = False) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": self.world.namespace},
            "spec": {
                "nodeName": self.node.name,
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {
                        "name": "app",
                        "image": self.node.busybox,
                        "imagePullPolicy": "Never",
                        "command": ["sh", "-c", script],
                        "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": read_only}],
                    }
                ],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
            },
        }
        await self.world.core.create_namespaced_pod(self.world.namespace, body)  # type: ignore[arg-type]

    async def finished(self, name: str) -> str:
        """Wait for the pod to end; its log when it Succeeded, else fail with its story."""
        pod = await self.world.until(
            f"pod {name} finished",
            lambda: self.world.read_pod(name),
            lambda p: p is not None and p.status.phase in ("Succeeded", "Failed"),
        )
        log = await self.world.core.read_namespaced_pod_log(name, self.world.namespace)
        assert pod.status.phase == "Succeeded", f"pod {name}: {pod.status}\nlog: {log}\n{await self.story(name)}"
        return str(log)

    async def log(self, name: str) -> str:
        """The pod's log so far; empty while its container has not started."""
        try:
            return str(await self.world.core.read_namespaced_pod_log(name, self.world.namespace))
        except client.ApiException as e:
            if e.status == 400:  # "container ... is waiting to start"
                return ""
            raise

    async def running(self, name: str) -> Any:
        return await self.world.until(
            f"pod {name} running",
            lambda: self.world.read_pod(name),
            lambda p: p is not None and p.status.phase in ("Running", "Succeeded"),
        )

    async def delete_pod(self, name: str) -> None:
        await self.world.core.delete_namespaced_pod(name, self.world.namespace, grace_period_seconds=0)
        await self.world.until(f"pod {name} gone", lambda: self.world.read_pod(name), lambda p: p is None)

    async def story(self, name: str) -> str:
        events = await self.world.core.list_namespaced_event(
            self.world.namespace, field_selector=f"involvedObject.name={name}"
        )
        return "\n".join(f"{e.reason}: {e.message}" for e in events.items) + "\n" + self.world.logs()

    async def bound_claim(self, name: str) -> tuple[str, str]:
        """A claim of the class, Bound: (PV name, gluster volume name)."""
        await self.world.claim(name, self.storage_class)
        claim = await self.world.until(f"claim {name} Bound", lambda: self.world.read_claim(name), bound)
        pv = await self.world.read_pv(claim.spec.volume_name)
        assert pv.spec.csi.driver == "glusterfs.gluster.org", pv.spec
        return str(claim.spec.volume_name), str(pv.spec.csi.volume_attributes["volume"])

    async def delete_claim(self, name: str, pv: str, volume: str) -> None:
        await self.world.core.delete_namespaced_persistent_volume_claim(name, self.world.namespace)
        await self.world.until(f"PV {pv} deleted", lambda: self.world.read_pv(pv), lambda found: found is None)
        assert await self.world.gluster_volume(volume) is None, f"gluster volume {volume} outlived its claim"

    async def mounted(self, volume: str) -> list[str]:
        """The staging mounts of ``volume`` on the kubelet host (the pods' bind mounts of it left out)."""
        process = await asyncio.create_subprocess_exec(
            "findmnt", "-rn", "-t", "fuse.glusterfs", "-o", "SOURCE,TARGET", stdout=asyncio.subprocess.PIPE
        )
        out, _ = await process.communicate()
        staging = f"{self.node.kubelet_root}/plugins/"
        return [
            target
            for source, _, target in (line.partition(" ") for line in out.decode().splitlines())
            if source.endswith(f":/{volume}") and target.startswith(staging)
        ]


@pytest_asyncio.fixture(scope="module")
async def pods(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Pods]:
    node = load_node()
    tmp = tmp_path_factory.mktemp("pods")
    async with kube_world(stack, tmp) as world:
        await ensure_csi_driver()
        plugin = CsiPlugin(world.stack, tmp / "csi.log", node, world.kubeconfig)
        world.processes.append(plugin)
        plugin.start()
        await plugin.wait_ready()
        await wait_registered(world.api, node)
        storage_class = await world.storage_class("pods", reclaim="Delete")
        yield Pods(world, node, plugin, storage_class)


async def test_a_pod_writes_data_and_a_new_pod_reads_it_back(pods: Pods) -> None:
    """The seed's listings 7 to 9: a claim, a pod writing /data, the pod gone, a new pod reading it."""
    pv, volume = await pods.bound_claim("data")
    await pods.pod("writer", "data", f"echo '{TEXT}' > /data/hello && sync && cat /data/hello")
    assert (await pods.finished("writer")).strip() == TEXT
    await pods.delete_pod("writer")

    await pods.pod("reader", "data", "cat /data/hello && stat -c '%g' /data", read_only=True)
    lines = (await pods.finished("reader")).strip().splitlines()
    assert lines[0] == TEXT, lines
    assert 40000 <= int(lines[1]) <= 40999, f"/data is not owned by the volume's gid: {lines}"

    info = await pods.world.gluster_volume(volume)
    assert info is not None and len(info.bricks) == 3
    ssh = pods.world.stack.ssh()
    try:
        for brick in info.bricks:
            found = await ssh.run(brick.host, ("cat", "--", f"{brick.path}/hello"), timeout=30)
            assert found.stdout.strip() == TEXT, f"the file is not on the brick {brick.host}:{brick.path}"
    finally:
        await ssh.close()

    await pods.delete_pod("reader")
    await pods.world.until("the staging mount gone", lambda: pods.mounted(volume), lambda mounts: mounts == [])
    await pods.delete_claim("data", pv, volume)


async def test_two_pods_share_the_claim_and_see_each_other_s_writes(pods: Pods) -> None:
    pv, volume = await pods.bound_claim("shared")
    script = (
        "echo {me} > /data/{me}; "
        "for i in $(seq 120); do [ -f /data/{other} ] && break; sleep 0.5; done; "
        "cat /data/{other}; "
        "for i in $(seq 240); do [ -f /data/release ] && break; sleep 0.5; done"
    )
    await pods.pod("left", "shared", script.format(me="left", other="right"))
    await pods.pod("right", "shared", script.format(me="right", other="left"))
    for pod, other in (("left", "right"), ("right", "left")):
        await pods.world.until(
            f"pod {pod} read {other}'s file",
            lambda p=pod: pods.log(p),  # type: ignore[misc]
            lambda log, o=other: log.strip() == o,  # type: ignore[misc]
        )
    assert len(await pods.mounted(volume)) == 1, "one FUSE mount per volume per node, while both pods run"
    await pods.pod("release", "shared", "touch /data/release")
    for name in ("left", "right", "release"):
        await pods.finished(name)
    for name in ("left", "right", "release"):
        await pods.delete_pod(name)
    await pods.delete_claim("shared", pv, volume)


async def test_a_plugin_killed_between_stage_and_publish_still_lets_the_pod_start(pods: Pods) -> None:
    pv, volume = await pods.bound_claim("crash")
    dying = pods.restart_plugin(exit_after_stage="true")
    await dying.wait_ready()
    await pods.pod("survivor", "crash", "echo alive > /data/alive && cat /data/alive")
    deadline = time.monotonic() + 120
    assert dying.process is not None
    while dying.process.poll() is None:
        assert time.monotonic() < deadline, f"the plugin never staged the volume\n{dying.tail()}"
        await asyncio.sleep(0.2)
    assert dying.process.returncode == 70, dying.tail()
    assert await pods.mounted(volume), "the staging mount did not outlive the plugin"
    healthy = pods.restart_plugin()
    await healthy.wait_ready()
    assert (await pods.finished("survivor")).strip() == "alive"
    await pods.delete_pod("survivor")
    await pods.delete_claim("crash", pv, volume)


async def test_reads_go_on_while_a_storage_node_s_glusterd_is_down(pods: Pods) -> None:
    pv, volume = await pods.bound_claim("outage")
    script = (
        "echo steady > /data/f && sync; touch /data/started; "
        'for i in $(seq 60); do [ "$(cat /data/f)" = steady ] || exit 7; sleep 0.5; done; echo done'
    )
    await pods.pod("steady", "outage", script)
    await pods.running("steady")
    try:
        must(gluster_sh("stop-service", "node1", "glusterd", timeout=60))
        assert (await pods.finished("steady")).strip() == "done"
    finally:
        must(gluster_sh("start-service", "node1", "glusterd"))
    await pods.delete_pod("steady")
    await pods.delete_claim("outage", pv, volume)


async def test_a_mount_that_fails_is_an_event_on_the_claim_naming_the_server(pods: Pods) -> None:
    """A PV naming a gluster volume that does not exist: the pod waits, and the claim says why."""
    world = pods.world
    name = f"ghost-{uuid.uuid4().hex[:6]}"
    pv_body = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"{world.namespace}-{name}"},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "claimRef": {"namespace": world.namespace, "name": name},
            "csi": {
                "driver": "glusterfs.gluster.org",
                "volumeHandle": uuid.uuid4().hex,
                "volumeAttributes": {"volume": "no_such_volume", "servers": world.stack.nodes[1]},
            },
        },
    }
    await world.core.create_persistent_volume(pv_body)  # type: ignore[arg-type]
    claim_body = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": world.namespace},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "volumeName": pv_body["metadata"]["name"],  # type: ignore[index]
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    await world.core.create_namespaced_persistent_volume_claim(world.namespace, claim_body)  # type: ignore[arg-type]
    try:
        await world.until(f"claim {name} Bound", lambda: world.read_claim(name), bound)
        await pods.pod("waiting", name, "true")
        claim = await world.read_claim(name)

        async def claim_events() -> list[Any]:
            found = await world.core.list_namespaced_event(
                world.namespace, field_selector=f"involvedObject.uid={claim.metadata.uid}"
            )
            return [e for e in found.items if e.reason == "MountFailed"]

        [event] = (await world.until("a MountFailed event on the claim", claim_events, lambda found: bool(found)))[:1]
        assert event.type == "Warning" and world.stack.nodes[1] in event.message, event.message
        metrics = await pods.plugin.metrics()
        assert "provisioner_csi_mount_failures_total{" in metrics
    finally:
        await world.core.delete_namespaced_pod("waiting", world.namespace, grace_period_seconds=0)
        await world.until("pod waiting gone", lambda: world.read_pod("waiting"), lambda p: p is None)
        await world.core.delete_namespaced_persistent_volume_claim(name, world.namespace)
        await world.core.delete_persistent_volume(pv_body["metadata"]["name"])  # type: ignore[index]
