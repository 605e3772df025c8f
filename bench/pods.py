"""Claim to pod: how long until a pod that mounts a new claim is Running, in one run beside its floors.

Three things are timed in each round, on the dev stack's real kubelet and gluster nodes:

* **pod without a volume**: a busybox pod created → Running (the kubelet's and the runtime's own cost);
* **claim → Bound**: a claim of a StorageClass of ours created → Bound (the watcher, the daemon
  making a replica-3 volume, the PV binder);
* **claim → pod Running**: the same claim and a pod using it created together → the pod Running,
  which for kubelet means its ``/data`` is mounted (NodeStageVolume's FUSE mount, NodePublishVolume's
  bind) — so this is claim → Bound plus the mount plus the pod start, plus however long kubelet
  waits before it looks at the claim again after finding it unbound;
* **pod of a Bound claim**: a pod created once its claim is Bound → Running: the mount and the start.

The CSI node plugin runs beside kubelet as in the tests (``devstack.node``). Latencies are wall clock
from the create call to the first poll (every 0.1 s) that sees the state; the table gives p50, p95
and max per kind, and the ratios the issue asks for: pod with a new claim over claim → Bound, and
over the pod without a volume.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import common
from bench.common import Report, summary, table
from devstack.claims import KubeWorld, bound, claim_body, kube_world
from devstack.node import CsiPlugin, Node, ensure_csi_driver, load_node, wait_registered
from devstack.stack import load_stack

POLL = 0.1


def pod_body(world: KubeWorld, node: Node, name: str, claim: str | None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "app",
        "image": node.busybox,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", "sleep 3600"],
    }
    spec: dict[str, Any] = {
        "nodeName": node.name,
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 0,
        "containers": [container],
    }
    if claim is not None:
        container["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
        spec["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": world.namespace}, "spec": spec}


async def first_seen(read: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], *, timeout: float) -> float:
    """Monotonic time of the first poll at which ``done`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done(await read()):
            return time.monotonic()
        await asyncio.sleep(POLL)
    raise TimeoutError(f"not within {timeout:g}s")


def running(pod: Any) -> bool:
    return pod is not None and pod.status.phase == "Running"


async def round_trip(world: KubeWorld, node: Node, storage_class: str, index: int, timeout: float) -> dict[str, float]:
    core, ns = world.core, world.namespace
    plain, together, claim, later, after = (f"{k}-{index}" for k in ("plain", "together", "claim", "later", "after"))

    async def create_pod(name: str, claim_name: str | None) -> None:
        await core.create_namespaced_pod(ns, pod_body(world, node, name, claim_name))  # type: ignore[arg-type]

    async def create_claim(name: str) -> None:
        await core.create_namespaced_persistent_volume_claim(ns, claim_body(name, ns, storage_class))  # type: ignore[arg-type]

    started = time.monotonic()
    await create_pod(plain, None)
    plain_running = await first_seen(lambda: world.read_pod(plain), running, timeout=timeout)

    created = time.monotonic()  # a claim and its pod at once, as an application's manifests arrive
    await create_claim(claim)
    await create_pod(together, claim)
    bound_at, running_at = await asyncio.gather(
        first_seen(lambda: world.read_claim(claim), bound, timeout=timeout),
        first_seen(lambda: world.read_pod(together), running, timeout=timeout),
    )

    await create_claim(later)  # a pod that comes once its claim is Bound: the mount and start alone
    await first_seen(lambda: world.read_claim(later), bound, timeout=timeout)
    mounting = time.monotonic()
    await create_pod(after, later)
    mounted_at = await first_seen(lambda: world.read_pod(after), running, timeout=timeout)

    for name in (plain, together, after):
        await core.delete_namespaced_pod(name, ns, grace_period_seconds=0)
    for name in (plain, together, after):
        await first_seen(lambda n=name: world.read_pod(n), lambda p: p is None, timeout=timeout)  # type: ignore[misc]
    for name in (claim, later):
        found = await world.read_claim(name)
        await core.delete_namespaced_persistent_volume_claim(name, ns)
        await first_seen(lambda f=found: world.read_pv(f.spec.volume_name), lambda pv: pv is None, timeout=timeout)  # type: ignore[misc]
    return {
        "pod_without_volume": plain_running - started,
        "claim_bound": bound_at - created,
        "claim_pod_running": running_at - created,
        "bound_claim_pod_running": mounted_at - mounting,
    }


async def run(args: argparse.Namespace, report: Report) -> None:
    stack = load_stack()
    node = load_node()
    rounds: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-pods-") as tmp:
        async with kube_world(stack, Path(tmp)) as world:
            await ensure_csi_driver()
            plugin = CsiPlugin(world.stack, Path(tmp) / "csi.log", node, world.kubeconfig)
            world.processes.append(plugin)
            plugin.start()
            await plugin.wait_ready()
            await wait_registered(world.api, node)
            storage_class = await world.storage_class("bench", reclaim="Delete")
            for index in range(args.warmup + args.repeat):
                measured = await round_trip(world, node, storage_class, index, args.timeout)
                if index >= args.warmup:
                    rounds.append(measured)
                    print(
                        f"round {index - args.warmup + 1}: " + ", ".join(f"{k} {v:.2f}s" for k, v in measured.items())
                    )
    kinds = ("pod_without_volume", "claim_bound", "claim_pod_running", "bound_claim_pod_running")
    stats = {kind: summary([r[kind] for r in rounds]) for kind in kinds}
    report.data["rounds"] = rounds
    report.data["summary"] = stats
    rows = [(kind, stats[kind]["p50"], stats[kind]["p95"], stats[kind]["max"]) for kind in kinds]
    print("\n" + table(("seconds", "p50", "p95", "max"), rows))
    ratios = {
        "pod with a new claim / claim Bound (p50)": stats["claim_pod_running"]["p50"] / stats["claim_bound"]["p50"],
        "pod with a new claim / pod without volume (p50)": stats["claim_pod_running"]["p50"]
        / stats["pod_without_volume"]["p50"],
        "claim and pod together, beyond Bound, p50 seconds": stats["claim_pod_running"]["p50"]
        - stats["claim_bound"]["p50"],
        "pod of a Bound claim / pod without volume (p50)": stats["bound_claim_pod_running"]["p50"]
        / stats["pod_without_volume"]["p50"],
    }
    report.data["ratios"] = ratios
    print("\n" + table(("comparison", "value"), list(ratios.items())))


def main() -> int:
    parser = common.parser("pods", __doc__)
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for one state (default 300)")
    return common.run_bench("pods", parser.parse_args(), run, run_id=uuid.uuid4().hex[:8], replica=3)


if __name__ == "__main__":
    sys.exit(main())
