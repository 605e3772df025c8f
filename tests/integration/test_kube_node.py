"""The dev stack's Kubernetes node is a real one: a kubelet on containerd and runc runs pods to completion.

``deploy/dev/node.sh up`` joins the node to the control plane of ``deploy/dev/kube.sh``; its facts are in
``$DEV_STATE/node/env`` (node name, kubelet root, image names, pod CIDR, logs). No scheduler runs, so the
pods name the node (``nodeName``); no registry is reached, so they use the locally built images
(``imagePullPolicy: Never``). If the node is not up, the fixture starts it; if that fails, the tests fail
with the reason. Each test makes its own namespace and deletes it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio import client, config

from devstack.kube import DEV_STATE, REPO, api_client, ensure_kube
from devstack.stack import read_env

pytestmark = pytest.mark.integration

NODE_SH = REPO / "deploy" / "dev" / "node.sh"
NODE_ENV = DEV_STATE / "node" / "env"
# `up` may have to build the kubelet and crictl first (several minutes with a warm Go cache).
UP_TIMEOUT = 3600.0
POD_TIMEOUT = 120.0
GONE_TIMEOUT = 90.0


def ensure_node() -> dict[str, str]:
    """The node's env file, starting the node first when it is not up (the control plane must be)."""
    status = subprocess.run([str(NODE_SH), "status"], capture_output=True, text=True)
    if status.returncode == 0 and NODE_ENV.is_file():
        return read_env(NODE_ENV)
    try:
        started = subprocess.run([str(NODE_SH), "up"], capture_output=True, text=True, timeout=UP_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"the node is not up and `{NODE_SH} up` took over {UP_TIMEOUT}s") from exc
    if started.returncode != 0:
        raise RuntimeError(
            f"the node is not up ({status.stderr.strip()}) and `deploy/dev/node.sh up` failed "
            f"(exit {started.returncode}):\n{started.stderr[-4000:]}"
        )
    if not NODE_ENV.is_file():
        raise RuntimeError(f"`deploy/dev/node.sh up` succeeded but wrote no {NODE_ENV}")
    return read_env(NODE_ENV)


@pytest.fixture(scope="module")
def kubeconfig() -> Path:
    return ensure_kube()


@pytest.fixture(scope="module")
def node(kubeconfig: Path) -> dict[str, str]:
    return ensure_node()


@pytest_asyncio.fixture
async def api(kubeconfig: Path) -> AsyncIterator[client.ApiClient]:
    async with api_client(kubeconfig) as api:
        yield api


@pytest_asyncio.fixture
async def namespace(api: client.ApiClient, node: dict[str, str]) -> AsyncIterator[str]:
    """A namespace for the test; deleted at the end, and its pods must be gone from the node too."""
    name = f"node-test-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        pods = await core.list_namespaced_pod(name)
        uids = [pod.metadata.uid for pod in pods.items]
        try:
            await core.delete_namespace(name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
        # The namespace controller deletes the pods, the kubelet confirms it and removes their directories.
        kubelet_root = Path(node["KUBELET_ROOT"])
        await poll(
            f"pods of {name} deleted and their directories removed by the kubelet",
            lambda: absent(core, name, uids, kubelet_root),
            bool,
            GONE_TIMEOUT,
            node,
        )


async def absent(core: client.CoreV1Api, namespace: str, uids: list[str], kubelet_root: Path) -> bool:
    pods = await core.list_namespaced_pod(namespace)
    return not pods.items and not any((kubelet_root / "pods" / uid).exists() for uid in uids)


def tail(path: str, lines: int = 30) -> str:
    file = Path(path)
    if not file.is_file():
        return f"(no {file})"
    return "\n".join(file.read_text(errors="replace").splitlines()[-lines:])


def node_logs(node: dict[str, str]) -> str:
    return (
        f"--- kubelet log ---\n{tail(node['KUBELET_LOG'])}\n--- containerd log ---\n{tail(node['CONTAINERD_LOG'], 15)}"
    )


async def poll(
    what: str,
    read: Callable[[], Awaitable[Any]],
    done: Callable[[Any], bool],
    timeout: float,
    node: dict[str, str],
) -> Any:
    """Read until ``done`` holds; on timeout fail with the last value seen and the node's logs."""
    deadline = time.monotonic() + timeout
    while True:
        last = await read()
        if done(last):
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached within {timeout}s; last seen:\n{last}\n{node_logs(node)}")
        await asyncio.sleep(0.5)


def pod_manifest(name: str, node: dict[str, str], script: str, *, host_network: bool) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(
            node_name=node["NODE_NAME"],
            host_network=host_network,
            # No cluster DNS here: the node's resolv.conf, whatever the network.
            dns_policy="Default",
            restart_policy="Never",
            termination_grace_period_seconds=1,
            containers=[
                client.V1Container(
                    name="main",
                    image=node["IMAGE_BUSYBOX"],
                    image_pull_policy="Never",
                    command=["sh", "-c", script],
                    volume_mounts=[client.V1VolumeMount(name="data", mount_path="/data")],
                )
            ],
            volumes=[client.V1Volume(name="data", empty_dir=client.V1EmptyDirVolumeSource())],
        ),
    )


async def run_to_completion(core: client.CoreV1Api, namespace: str, pod: client.V1Pod, node: dict[str, str]) -> Any:
    await core.create_namespaced_pod(namespace, pod)
    return await wait_finished(core, namespace, pod.metadata.name, node)


async def wait_finished(core: client.CoreV1Api, namespace: str, name: str, node: dict[str, str]) -> Any:
    """The pod once it has finished; it must have Succeeded, its container exited 0."""
    finished = await poll(
        f"pod {name} finished",
        lambda: core.read_namespaced_pod(name, namespace),
        lambda p: p.status.phase in ("Succeeded", "Failed"),
        POD_TIMEOUT,
        node,
    )
    assert finished.status.phase == "Succeeded", f"{finished.status}\n{node_logs(node)}"
    (state,) = finished.status.container_statuses
    assert state.state.terminated.exit_code == 0
    return finished


async def test_the_node_is_ready_on_the_real_runtime(api: client.ApiClient, node: dict[str, str]) -> None:
    found = await client.CoreV1Api(api).read_node(node["NODE_NAME"])
    conditions = {c.type: c.status for c in found.status.conditions}
    assert conditions["Ready"] == "True", f"{found.status.conditions}\n{node_logs(node)}"
    go_mod = (REPO / "deploy" / "dev" / "k8sbins" / "go.mod").read_text()
    version = re.search(r"^\s*k8s\.io/kubernetes (v\d+\.\d+\.\d+)\s*$", go_mod, re.MULTILINE)
    assert version
    info = found.status.node_info
    assert info.kubelet_version == version[1]
    assert info.container_runtime_version.startswith("containerd://1.6."), info.container_runtime_version
    assert {"type": "InternalIP", "address": node["NODE_IP"]} in [a.to_dict() for a in found.status.addresses]
    # The node lifecycle controller of kube-controller-manager takes the not-ready taint off.
    assert not found.spec.taints, f"{found.spec.taints} (does kube-controller-manager run node-lifecycle-controller?)"
    images = {name for image in found.status.images for name in image.names}
    assert {node["IMAGE_PAUSE"], node["IMAGE_BUSYBOX"]} <= images, images


async def test_a_pod_writes_to_an_empty_dir_and_runs_to_completion(
    api: client.ApiClient, namespace: str, node: dict[str, str]
) -> None:
    core = client.CoreV1Api(api)
    token = uuid.uuid4().hex
    # It writes a file, waits for one from the host in the same directory, and exits.
    script = (
        f"echo {token} > /data/written && while [ ! -f /data/release ]; do sleep 0.2; done && "
        f'test "$(cat /data/release)" = {token} && echo done {token}'
    )
    pod = await core.create_namespaced_pod(namespace, pod_manifest("writer", node, script, host_network=True))
    # The emptyDir is a directory of the kubelet's on the host while the pod runs (the kubelet removes
    # it once the pod has finished).
    data = Path(node["KUBELET_ROOT"]) / "pods" / pod.metadata.uid / "volumes" / "kubernetes.io~empty-dir" / "data"
    written = await poll(
        "the pod's file in its emptyDir on the host",
        lambda: asyncio.to_thread(lambda: (data / "written").read_text() if (data / "written").is_file() else ""),
        bool,
        POD_TIMEOUT,
        node,
    )
    assert written == f"{token}\n"
    (data / "release").write_text(token)
    finished = await wait_finished(core, namespace, "writer", node)
    # The apiserver reaches the kubelet (its client certificate; the kubelet's serving certificate).
    try:
        log = await core.read_namespaced_pod_log("writer", namespace, container="main")
    except client.ApiException as exc:
        pytest.fail(
            f"the apiserver cannot get the pod's log from the kubelet (is kube-apiserver started with "
            f"--kubelet-client-certificate and --kubelet-preferred-address-types=InternalIP,...?): {exc.status} {exc.body!r}"
        )
    assert log == f"done {token}\n"
    assert finished.status.host_ip == node["NODE_IP"]


async def test_a_pod_on_the_pod_network_gets_an_address_from_the_cni(
    api: client.ApiClient, namespace: str, node: dict[str, str]
) -> None:
    core = client.CoreV1Api(api)
    cidr = ipaddress.ip_network(node["POD_CIDR"])
    gateway = next(cidr.hosts())
    # Its own address on eth0, in the pod CIDR, and the bridge (the host) reachable through it.
    script = f"ip -4 -o addr show dev eth0 && ping -c 1 -W 5 {gateway} && echo ok > /data/ok"
    finished = await run_to_completion(
        core, namespace, pod_manifest("networked", node, script, host_network=False), node
    )
    assert ipaddress.ip_address(finished.status.pod_ip) in cidr, finished.status.pod_ip
    assert finished.status.pod_ip != node["NODE_IP"]


async def test_the_node_credential_is_held_to_its_own_node(kubeconfig: Path, node: dict[str, str]) -> None:
    """Node authorizer and NodeRestriction: the kubelet's certificate reads its Node, nothing else."""
    api = await config.new_client_from_config(config_file=node["KUBELET_KUBECONFIG"], persist_config=False)
    try:
        core = client.CoreV1Api(api)
        own = await core.read_node(node["NODE_NAME"])
        assert own.metadata.name == node["NODE_NAME"]
        with pytest.raises(client.ApiException) as secrets:
            await core.list_namespaced_secret("kube-system")
        assert secrets.value.status == 403
        other_name = f"not-{node['NODE_NAME']}"
        try:
            await core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=other_name)))
        except client.ApiException as exc:
            assert exc.status == 403, exc
        else:
            async with api_client(kubeconfig) as admin:
                await client.CoreV1Api(admin).delete_node(other_name)
            pytest.fail("the kubelet's credential created another Node (is NodeRestriction enabled?)")
    finally:
        await api.close()
