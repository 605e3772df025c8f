"""What Kubernetes adds on top of the event path: claim created -> Bound against request -> result.

One daemon (``provisioner run`` with the Kubernetes part on) and one watcher (``provisioner watch``)
run as real processes on the local stack, with their own topics, cluster id (the dev topology loaded
under it), namespace, provisioner name and StorageClass (replica 3, policy Delete, Immediate binding),
so other people's tests on the stack are not disturbed. Worker settings are the daemon's defaults.

Kubernetes path: claims of the class are created through the API server; the watcher reserves a gid
on each claim and sends a provision request, the daemon makes the volume, the PV, Endpoints and
Service, and kube-controller-manager binds the claim. Latency = claim create call issued -> phase
Bound seen by this script. Deleting: claim delete call issued -> the PV gone (the binder marks it
Released, the watcher sends a delete request, the daemon removes the storage and then the PV).

Floor, in the same run and against the same daemon: provision requests of the same size and
durability (no claim, no gid) produced straight to the requests topic, as bench.e2e does. Latency =
request handed to the producer -> its result consumed (read_committed); deletes likewise. So
kubernetes / floor is the price of the watcher, the gid reservation, the PV/Endpoints/Service
calls, the claim annotation and the binder, over the same node work.

Claims, PVs and requests are watched, not polled: one list+watch of the namespace's claims and one
of the PVs, plus a reader of the requests and one of the results topic, stamp (monotonic clock of
this process) the first time each milestone is seen: gid reserved on the claim, request on the
bus, PV created, claim annotated, Bound, result; for deletes: claim gone, PV Released, request,
PV gone, result. The breakdown table is the mean of the intervals between them.

Phases (replica 3, --size each):
  warm-up         --warmup claims and --warmup event requests, provisioned and deleted, untimed
  one at a time   --repeat rounds of: claim -> Bound, claim deleted -> PV gone, event provision,
                  event delete (the order of the two paths alternates from round to round); N = 1
  burst of N      for each N > 1 in --n: N claims created at once, then deleted at once; then N
                  provision requests at once and N delete requests at once
Everything made is removed in a finally block (also on Ctrl-C or SIGTERM; the daemon and the
watcher run in their own session so a Ctrl-C reaches only this script, which cleans up through
them): the remaining claims are deleted, the requests in flight are waited for (a claim deleted
while its volume is made still gets its PV, which turns Released and is deleted) and so are the
PVs; event volumes get delete requests; then the daemon and watcher stop. A PV still there is
deleted, a brick or gluster volume of ours still on the nodes is taken apart by hand with the
daemon's own code, and the StorageClass, namespace and topics are deleted. `cleanup` in the JSON
says what had to be done by hand and what was left.

    python -m bench.kube                        # N = 1 (x3), 10: about 2-3 minutes on 2 busy cores
    python -m bench.kube --n 1 --repeat 2 --warmup 0   # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import re
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from kubernetes_asyncio import client

from bench import common
from bench.common import (
    REPO,
    RESULTS,
    GiB,
    Report,
    counts,
    histogram_delta,
    loadavg,
    parse_metrics,
    percentile,
    size,
    table,
)
from bench.e2e import (
    COMMAND_SECONDS,
    REQUEST_SECONDS,
    STEP_SECONDS,
    TEST_ONLY,
    TOPOLOGY,
    Bus,
    Group,
    _volume,
    delete_topics,
    gluster_volumes,
)
from devstack.kube import api_client, ensure_kube
from devstack.stack import Daemon, Stack, load_stack, load_topology
from provisioner.bus.topics import topic_partitions
from provisioner.domain import Brick, BrickId, Cluster, DeviceId, Replicate, Volume, VolumeId, volume_name_for
from provisioner.events import catalog, models, results
from provisioner.events.envelope import header, new_event
from provisioner.executor import Executor
from provisioner.executor.measured import MeasuredExecutor
from provisioner.kube import names
from provisioner.planning.clusters import cluster_from
from provisioner.settings import KafkaSettings, StorageSettings
from provisioner.storage import commands
from provisioner.storage.operations import VolumeOperations
from provisioner.storage.parsing import VolumeInfo, parse_volume_info
from provisioner.storage.tags import ID_OPTION
from provisioner.watch import decisions as claims
from provisioner.watch.bridge import request_id
from provisioner.watch.informer import Informer, Obj, api_source

log = logging.getLogger("bench.kube")
SOURCE = "/bench/kube"
KUBE, EVENTS = "kubernetes", "events"
CLEANUP_SECONDS = 240.0
# Milestones (claim: gid, annotated, volume_name, bound, claim_gone; PV: pv, pv_<phase>, pv_gone;
# request, result), and the intervals the breakdown reports: (column, from, to, who works then).
PROVISION_STEPS = (
    ("created->gid", "created", "gid", "watcher sees the claim, reserves a gid on it (a PATCH)"),
    ("gid->request", "gid", "request", "watcher reads the class, sends the request"),
    ("request->PV", "request", "pv", "daemon: claim check, event, bricks, gluster, PV create"),
    ("PV->Bound", "pv", "bound", "daemon: Endpoints, Service; binder binds the claim"),
    ("request->result", "request", "result", "daemon, whole request (compare the floor's)"),
)
PROVISION_MARKS = ("gid", "request", "pv", "pv_bound", "volume_name", "bound", "annotated", "result")
DELETE_STEPS = (
    ("delete->gone", "created", "claim_gone", "pvc-protection lets the claim go"),
    ("gone->Released", "claim_gone", "pv_released", "binder marks the PV Released"),
    ("Released->request", "pv_released", "request", "watcher sends the delete request"),
    ("request->PV gone", "request", "pv_gone", "daemon: gluster stop/delete, bricks, then the PV"),
    ("request->result", "request", "result", "daemon, whole request (compare the floor's)"),
)
DELETE_MARKS = ("claim_gone", "pv_released", "request", "pv_gone", "result")


class Process(Daemon):
    """``provisioner run`` or ``watch`` with the stack's topics and the default worker settings, in
    its own session: a Ctrl-C at the terminal reaches this script only, which then cleans up
    through the daemon and the watcher before stopping them."""

    def start(self) -> None:
        env = self.stack.daemon_env(
            PROVISIONER_HTTP__PORT=str(self.port), PROVISIONER_HTTP__HOST="127.0.0.1", **self.extra_env
        )
        for name in TEST_ONLY:
            env.pop(name, None)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "provisioner", self.command],
                env=env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Observer:
    """When this process first saw each milestone of a claim, of a PV and of a request."""

    def __init__(self, namespace: str, provisioner: str) -> None:
        self.namespace = namespace
        self.provisioner = provisioner
        self.claims: dict[str, dict[str, float]] = {}  # claim name -> milestone -> monotonic time
        self.pvs: dict[str, dict[str, float]] = {}  # PV name -> milestone -> monotonic time
        self.pv_uids: dict[str, str] = {}
        self.requests: dict[str, float] = {}  # request id -> seen on the requests topic
        self.changed = asyncio.Event()

    async def claims_listed(self, items: Sequence[Obj]) -> None:
        for item in items:
            await self.claim_event("SYNC", item)

    async def claim_event(self, kind: str, claim: Obj) -> None:
        meta = claim.get("metadata") or {}
        if meta.get("namespace") != self.namespace:
            return
        now = time.monotonic()
        marks = self.claims.setdefault(str(meta.get("name")), {})
        notes = claims.annotations_of(claim)
        for milestone, seen in (
            ("gid", names.CLAIM_GID in notes),
            ("annotated", names.VOLUME_ID in notes),
            ("volume_name", bool((claim.get("spec") or {}).get("volumeName"))),
            ("bound", (claim.get("status") or {}).get("phase") == "Bound"),
            ("claim_gone", kind == "DELETED"),
        ):
            if seen:
                marks.setdefault(milestone, now)
        self.changed.set()

    async def pvs_listed(self, items: Sequence[Obj]) -> None:
        for item in items:
            await self.pv_event("SYNC", item)

    async def pv_event(self, kind: str, pv: Obj) -> None:
        if not claims.ours(pv, self.provisioner):
            return
        now = time.monotonic()
        name = str((pv.get("metadata") or {}).get("name"))
        self.pv_uids[name] = claims.uid(pv)
        marks = self.pvs.setdefault(name, {})
        marks.setdefault("pv", now)
        phase = (pv.get("status") or {}).get("phase")
        if phase:
            marks.setdefault(f"pv_{str(phase).lower()}", now)
        if kind == "DELETED":
            marks.setdefault("pv_gone", now)
        self.changed.set()

    async def read_requests(self, stack: Stack) -> None:
        """Stamp every request on the requests topic (the watcher's included) by its CloudEvents id."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=stack.bootstrap, group_id=None, enable_auto_commit=False, isolation_level="read_committed"
        )
        await consumer.start()
        try:
            partitions = await topic_partitions(KafkaSettings(bootstrap=stack.bootstrap), stack.topic("requests"))
            consumer.assign(partitions)
            await consumer.seek_to_end(*partitions)
            while True:
                batches = await consumer.getmany(timeout_ms=200)
                now = time.monotonic()
                for records in batches.values():
                    for record in records:
                        id_ = header(list(record.headers), "ce_id")
                        if id_:
                            self.requests.setdefault(id_, now)
                if batches:
                    self.changed.set()
        finally:
            await consumer.stop()


@dataclass
class Phase(Group):
    """All samples of one (action, mode, path), with every claim's milestones (seconds after its call)."""

    milestones: list[dict[str, float]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {**super().as_json(), "milestones": self.milestones}


class Run:
    def __init__(
        self,
        args: argparse.Namespace,
        stack: Stack,
        api: client.ApiClient,
        *,
        run_id: str,
        logs: dict[str, Path],
        cluster: Cluster,
        executor: Executor,
    ) -> None:
        self.args = args
        self.stack = stack
        self.core = client.CoreV1Api(api)
        self.storage = client.StorageV1Api(api)
        self.run_id = run_id
        self.cluster = f"kube-{run_id}"
        self.namespace = f"bench-{run_id}"
        self.provisioner = f"gluster.org/bench-{run_id}"
        self.storage_class = f"bench-{run_id}"
        self.daemon = Process(stack, logs["daemon"], extra_env=self.env)
        self.watcher = Process(stack, logs["watch"], extra_env=self.env, command="watch")
        self.topology = cluster
        self.executor = executor
        self.bus = Bus(stack, timeout=args.timeout)
        self.observer = Observer(self.namespace, self.provisioner)
        self.groups: dict[tuple[str, str, str], Phase] = {}
        self.claim_uids: dict[str, str] = {}  # live claims: name -> uid
        self.all_claim_uids: list[str] = []
        self.event_live: set[str] = set()
        self.made: dict[str, Volume] = {}  # every volume of ours a result announced, by id
        self._serial = 0
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def env(self) -> dict[str, str]:
        return {
            "PROVISIONER_KUBERNETES__ENABLED": "true",
            "PROVISIONER_KUBERNETES__KUBECONFIG": str(self.args.kubeconfig),
            "PROVISIONER_KUBERNETES__PROVISIONER_NAME": self.provisioner,
            "PROVISIONER_KUBERNETES__NAMESPACE": self.namespace,
        }

    def group(self, action: str, mode: str, path: str, n: int) -> Phase:
        return self.groups.setdefault((action, mode, path), Phase(action, mode, path, n))

    def names(self, path: str, n: int) -> list[str]:
        out = []
        for _ in range(n):
            self._serial += 1
            out.append(f"c{self._serial:03d}" if path == KUBE else f"{self.stack.prefix}_e{self._serial:03d}")
        return out

    # --- set-up ---------------------------------------------------------------------------------

    async def set_up(self) -> None:
        await self.core.create_namespace({"metadata": {"name": self.namespace}})  # type: ignore[arg-type]
        await self.storage.create_storage_class(
            {  # type: ignore[arg-type]
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": self.storage_class},
                "provisioner": self.provisioner,
                "reclaimPolicy": "Delete",
                "volumeBindingMode": "Immediate",
                "parameters": {"cluster": self.cluster, "volumetype": "replicate:3"},
            }
        )
        self.daemon.start()
        self.watcher.start()
        await self.daemon.wait_ready()
        await self.watcher.wait_ready()
        await load_topology(self.stack, self.cluster)
        await self.bus.start()
        list_claims = functools.partial(self.core.list_namespaced_persistent_volume_claim, self.namespace)
        informers = (
            Informer(
                api_source("persistentvolumeclaims", list_claims),
                on_list=self.observer.claims_listed,
                on_event=self.observer.claim_event,
                resync=3600,
            ),
            Informer(
                api_source("persistentvolumes", self.core.list_persistent_volume),
                on_list=self.observer.pvs_listed,
                on_event=self.observer.pv_event,
                resync=3600,
            ),
        )
        self._tasks = [asyncio.create_task(i.run()) for i in informers]
        self._tasks.append(asyncio.create_task(self.observer.read_requests(self.stack)))
        for informer in informers:
            await asyncio.wait_for(informer.synced.wait(), 60)
        deadline = time.monotonic() + 60
        while parse_metrics(await self.watcher.metrics()).get(("provisioner_watch_leader", ())) != 1.0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the watcher did not take its Lease within 60 s:\n{self.watcher.tail()}")
            await asyncio.sleep(0.2)

    # --- waiting --------------------------------------------------------------------------------

    async def until(self, what: str, missing: Callable[[], list[str]]) -> None:
        """Until ``missing()`` is empty; fails early when the daemon or watcher died or a request failed."""
        deadline = time.monotonic() + self.args.timeout
        while left := missing():
            for process in (self.daemon, self.watcher):
                if not process.alive():
                    raise RuntimeError(f"{process.command} exited while waiting for {what}:\n{process.tail()}")
            self._check_failures()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: {len(left)} still missing after {self.args.timeout:g}s: {left[:5]}")
            self.observer.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.observer.changed.wait(), 1.0)
        self._note_results()

    def _check_failures(self) -> None:
        for uid in self.claim_uids.values():
            arrived = self.bus.arrived.get(request_id("provision", uid))
            if arrived is not None and isinstance(arrived[1].data, results.RequestFailed):
                failed = arrived[1].data
                raise RuntimeError(f"provision of claim {uid} failed: {failed.reason}: {failed.message}")

    def _note_results(self) -> None:
        for _, event in list(self.bus.arrived.values()):
            data = event.data
            if isinstance(data, results.VolumeProvisioned) and data.volume.cluster == self.cluster:
                self.made.setdefault(data.volume.volume_id, _volume(data.volume))

    # --- the Kubernetes path --------------------------------------------------------------------

    async def kube_round(self, action: str, claim_names: list[str], group: Phase | None) -> None:
        before = parse_metrics(await self.daemon.metrics())
        load = loadavg()
        started = time.monotonic()
        calls: dict[str, float] = {}

        async def create(name: str) -> None:
            body = {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": self.storage_class,
                    "resources": {"requests": {"storage": str(self.args.size)}},
                },
            }
            calls[name] = time.monotonic()
            made = await self.core.create_namespaced_persistent_volume_claim(self.namespace, body)  # type: ignore[arg-type]
            self.claim_uids[name] = str(made.metadata.uid)
            self.all_claim_uids.append(str(made.metadata.uid))

        async def delete(name: str) -> None:
            calls[name] = time.monotonic()
            await self.core.delete_namespaced_persistent_volume_claim(name, self.namespace)

        await asyncio.gather(*((create if action == "provision" else delete)(n) for n in claim_names))
        uids = {n: self.claim_uids[n] for n in claim_names}
        pvs = {n: names.pv_name(uid) for n, uid in uids.items()}
        seen = self.observer
        if action == "provision":
            await self.until("claims Bound", lambda: [n for n in claim_names if "bound" not in seen.claims.get(n, {})])
            rids = {n: request_id("provision", uid) for n, uid in uids.items()}
            end = {n: seen.claims[n]["bound"] for n in claim_names}
        else:
            await self.until("PVs gone", lambda: [n for n in claim_names if "pv_gone" not in seen.pvs.get(pvs[n], {})])
            rids = {n: request_id("delete", seen.pv_uids[pvs[n]]) for n in claim_names}
            end = {n: seen.pvs[pvs[n]]["pv_gone"] for n in claim_names}
        # The result may come after Bound / the PV's removal: wait for it too (it is a milestone).
        await self.until("results", lambda: [n for n in claim_names if rids[n] not in self.bus.arrived])
        after = parse_metrics(await self.daemon.metrics())
        if action == "delete":
            for name in claim_names:
                self.claim_uids.pop(name, None)
        if group is None:
            return
        group.add([end[n] - calls[n] for n in claim_names], max(end.values()) - started, load)
        for name in claim_names:
            stamps = {**seen.claims.get(name, {}), **seen.pvs.get(pvs[name], {})}
            if rids[name] in seen.requests:
                stamps["request"] = seen.requests[rids[name]]
            stamps["result"] = self.bus.arrived[rids[name]][0]
            keep = PROVISION_MARKS if action == "provision" else DELETE_MARKS
            group.milestones.append({k: round(v - calls[name], 4) for k, v in stamps.items() if k in keep})
        self._metrics(group, before, after)

    # --- the floor: events straight to the daemon -----------------------------------------------

    async def event_round(self, action: str, volume_names: list[str], group: Phase | None) -> None:
        if action == "provision":
            data: list[models.Model] = [
                models.ProvisionVolume(cluster=self.cluster, size=self.args.size, name=n) for n in volume_names
            ]
            type_ = catalog.PROVISION_REQUESTED
        else:
            data = [models.DeleteVolume(cluster=self.cluster, name=n) for n in volume_names]
            type_ = catalog.DELETE_REQUESTED
        events = [new_event(type_, d, source=SOURCE) for d in data]
        before = parse_metrics(await self.daemon.metrics())
        load = loadavg()
        if action == "provision":
            self.event_live.update(volume_names)
        latencies, wall, answers = await self.bus.round(events, key=self.cluster)
        after = parse_metrics(await self.daemon.metrics())
        for name, result in zip(volume_names, answers, strict=True):
            if isinstance(result.data, results.RequestFailed):
                raise RuntimeError(f"event {action} of {name} failed: {result.data.reason}: {result.data.message}")
            if action == "delete":
                self.event_live.discard(name)
        self._note_results()
        if group is not None:
            group.add(latencies, wall, load)
            self._metrics(group, before, after)

    def _metrics(self, group: Phase, before: dict[Any, float], after: dict[Any, float]) -> None:
        group.merge(group.requests, histogram_delta(before, after, REQUEST_SECONDS, "type"))
        group.merge(group.steps, histogram_delta(before, after, STEP_SECONDS, "step"))
        group.merge(group.commands, histogram_delta(before, after, COMMAND_SECONDS, "command"))

    # --- phases ---------------------------------------------------------------------------------

    async def both(self, mode: str, n: int, *, kube_first: bool = True) -> None:
        order = (KUBE, EVENTS) if kube_first else (EVENTS, KUBE)
        for path in order:
            step = self.kube_round if path == KUBE else self.event_round
            batch = self.names(path, n)
            timed = mode != "warm-up"
            await step("provision", batch, self.group("provision", mode, path, n) if timed else None)
            await step("delete", batch, self.group("delete", mode, path, n) if timed else None)

    async def phases(self) -> None:
        for _ in range(self.args.warmup):
            await self.both("warm-up", 1)
        print(f"  warm-up done ({self.args.warmup} claim(s) and request(s))", flush=True)
        if 1 in self.args.n:
            mode = "one at a time"
            for i in range(self.args.repeat):
                await self.both(mode, 1, kube_first=i % 2 == 0)
                k = self.groups[("provision", mode, KUBE)].latencies[-1]
                e = self.groups[("provision", mode, EVENTS)].latencies[-1]
                print(f"  one at a time {i + 1}/{self.args.repeat}: claim->Bound {k:.2f}s, event {e:.2f}s", flush=True)
        for n in sorted(x for x in self.args.n if x > 1):
            mode = f"burst of {n}"
            await self.both(mode, n)
            walls = {p: self.groups[("provision", mode, p)].walls[-1] for p in (KUBE, EVENTS)}
            print(f"  {mode}: all Bound in {walls[KUBE]:.1f}s, all results in {walls[EVENTS]:.1f}s", flush=True)

    # --- clean-up -------------------------------------------------------------------------------

    async def clean_up(self) -> dict[str, Any]:
        """Remove everything this run made, whatever state it broke in; returns what it had to do and found.

        The claims go first; the daemon and the watcher then finish what is in flight (a claim deleted
        while its volume is made still gets its PV, which turns Released and is deleted) and remove
        the PVs. Only what they could not remove is taken apart by hand, with the daemon's own code."""
        notes: dict[str, Any] = {}
        with contextlib.suppress(Exception):
            listed = await self.core.list_namespaced_persistent_volume_claim(self.namespace)
            for claim in listed.items:
                with contextlib.suppress(client.ApiException):
                    await self.core.delete_namespaced_persistent_volume_claim(claim.metadata.name, self.namespace)
        if self.daemon.alive() and self.watcher.alive():
            deadline = time.monotonic() + CLEANUP_SECONDS
            await asyncio.sleep(1.0)  # a request the watcher was about to send for a claim just deleted
            while time.monotonic() < deadline:
                if not self._in_flight() and not await self._our_pvs():
                    break
                await asyncio.sleep(0.5)
            self._note_results()
        if self.event_live and self.daemon.alive():
            with contextlib.suppress(Exception):
                await self.event_round("delete", sorted(self.event_live), None)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.bus.stop()
        for process in (self.watcher, self.daemon):
            code = process.stop()
            if code not in (0, None):
                notes[f"{process.command}_exit"] = code
        for pv in await self._our_pvs():  # the daemon could not remove it: the object at least goes
            with contextlib.suppress(client.ApiException):
                await self.core.delete_persistent_volume(pv)
            notes.setdefault("pvs_deleted_by_hand", []).append(pv)
        found = await self.leftovers()
        if found:
            notes["found_then_removed"] = found
            bricks = {b for key, ids in found.items() if key != "gluster volumes" for b in ids}
            known = [v for v in self.made.values() if any(str(b.id) in bricks for b in v.bricks)]
            fstab = self.stack.daemon_env()["PROVISIONER_STORAGE__FSTAB"]
            await remove_volumes(
                self.executor, self.topology, found.get("gluster volumes", []), known=known, fstab=fstab
            )
            found = await self.leftovers()
        notes["leftovers"] = found
        with contextlib.suppress(client.ApiException):
            await self.storage.delete_storage_class(self.storage_class)
        with contextlib.suppress(client.ApiException):
            await self.core.delete_namespace(self.namespace)
        return notes

    def _in_flight(self) -> list[str]:
        """Requests the watcher sent for our claims and PVs that have no result yet."""
        ids = [request_id("provision", uid) for uid in self.all_claim_uids]
        ids += [request_id("delete", uid) for uid in self.observer.pv_uids.values()]
        return [i for i in ids if i in self.observer.requests and i not in self.bus.arrived]

    async def _our_pvs(self) -> list[str]:
        try:
            listed = await self.core.list_persistent_volume()
        except Exception as e:
            print(f"  cannot list PersistentVolumes: {e}", file=sys.stderr)
            return []
        return [
            pv.metadata.name
            for pv in listed.items
            if (pv.metadata.annotations or {}).get(names.PROVISIONED_BY) == self.provisioner
        ]

    async def leftovers(self) -> dict[str, list[str]]:
        """Bricks of ours still on a node (image or mount) and gluster volumes of ours still defined
        (the volumes of every claim made count, also those whose result never came)."""
        ids = {str(b.id) for v in self.made.values() for b in v.bricks}
        ours = {v.name for v in self.made.values()}
        ours |= {volume_name_for(VolumeId(claims.claim_volume_id(uid))) for uid in self.all_claim_uids}
        found: dict[str, list[str]] = {}
        for node in self.topology.nodes:
            dirs = [d.name for d in node.devices]
            images = await self.executor.run(
                node.manage, ("find", *dirs, "-maxdepth", "1", "-name", "brick_*.img"), timeout=60, check=False
            )
            mounts = await self.executor.run(node.manage, ("findmnt", "-rn", "-o", "TARGET"), timeout=60, check=False)
            mine = sorted(i for i in ids if i in images.stdout or i in mounts.stdout)
            if mine:
                found[node.manage] = mine
        volumes = await gluster_volumes(self.executor, self.topology.nodes[0].manage)
        left = [v for v in volumes if v in ours or v.startswith(self.stack.prefix + "_")]
        if left:
            found["gluster volumes"] = left
        return found


async def remove_volumes(
    executor: Executor, cluster: Cluster, volume_names: Iterable[str], *, known: Iterable[Volume], fstab: str
) -> None:
    """Take apart, with the daemon's own code (gluster stop/delete, then per brick umount, fstab line,
    image, mount point), the named gluster volumes (their bricks read from ``gluster volume info``)
    and the ``known`` volumes."""
    ops = VolumeOperations(executor, StorageSettings(fstab=fstab))
    volumes = {v.name: v for v in known}
    for name in volume_names:
        listed = await executor.run(
            cluster.nodes[0].manage, commands.volume_info(name, timeout=60), timeout=90, check=False
        )
        for info in parse_volume_info(listed.stdout) if listed.exit_status == 0 else []:
            volumes.setdefault(name, rebuilt(cluster, info))
    for volume in volumes.values():
        try:
            await ops.remove(cluster, volume)
            print(f"  removed {volume.name} by hand", flush=True)
        except Exception as e:
            print(f"  could not remove {volume.name}: {e}", file=sys.stderr)


_BRICK_PATH = re.compile(r"/vg_([0-9a-f]+)/brick_([0-9a-f]+)/brick$")


def rebuilt(cluster: Cluster, info: VolumeInfo) -> Volume:
    """A volume of ours as the daemon would know it, from what gluster says (brick paths name the
    device and brick ids; the volume id is its ``user.provisioner.id`` option)."""
    bricks = []
    for i, brick in enumerate(info.bricks):
        match = _BRICK_PATH.search(brick.path)
        if match is None:
            raise ValueError(f"{info.name}: brick {brick.path} is not one of ours")
        device = DeviceId(match.group(1))
        node, _ = cluster.device(device)
        bricks.append(
            Brick(
                id=BrickId(match.group(2)), node=node.id, device=device, size=0, set_index=i // 3, arbiter=brick.arbiter
            )
        )
    volume_id = VolumeId(info.options.get(ID_OPTION, ""))
    return Volume(
        id=volume_id, name=info.name, cluster=cluster.id, size=0, durability=Replicate(), bricks=tuple(bricks)
    )


# --- report ---------------------------------------------------------------------------------------


def comparisons(groups: dict[tuple[str, str, str], Phase]) -> list[dict[str, Any]]:
    rows = []
    for (action, mode, path), kube in groups.items():
        floor = groups.get((action, mode, EVENTS))
        if path != KUBE or floor is None or not kube.latencies or not floor.latencies:
            continue
        k, f = _stats(kube), _stats(floor)
        rows.append(
            {
                "action": action,
                "mode": mode,
                "n": kube.n,
                "samples": kube.volumes,
                KUBE: k,
                EVENTS: f,
                "p50_ratio": k["p50"] / f["p50"],
                "wall_ratio": k["wall"] / f["wall"],
            }
        )
    return rows


def _stats(group: Phase) -> dict[str, float]:
    values = group.latencies
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "max": max(values),
        "mean": statistics.fmean(values),
        "wall": max(group.walls),
    }


def breakdown(groups: dict[tuple[str, str, str], Phase]) -> list[dict[str, Any]]:
    """Per Kubernetes phase: mean seconds of each interval between milestones, and the daemon's handler."""
    rows = []
    for (action, mode, path), group in groups.items():
        if path != KUBE or not group.milestones:
            continue
        steps = PROVISION_STEPS if action == "provision" else DELETE_STEPS
        intervals: dict[str, float | None] = {}
        for label, start, stop, _ in steps:
            values = [
                m[stop] - m.get(start, 0.0)
                for m in group.milestones
                if stop in m and (start in m or start == "created")
            ]
            intervals[label] = statistics.fmean(values) if values else None
        floor = groups.get((action, mode, EVENTS))
        rows.append(
            {
                "action": action,
                "mode": mode,
                "n": group.n,
                "mean_latency": statistics.fmean(group.latencies),
                "intervals": intervals,
                "handler": _handler(group, action),
                "kubernetes_step": _step(group, "kubernetes"),
                "brick_step": _step(group, "brick_create"),
                "floor_brick_step": _step(floor, "brick_create"),
                "ssh_commands_per_volume": _commands(group),
                "floor_mean_latency": statistics.fmean(floor.latencies) if floor and floor.latencies else None,
                "floor_handler": _handler(floor, action) if floor else None,
                "floor_ssh_commands_per_volume": _commands(floor) if floor else None,
            }
        )
    return rows


def _handler(group: Phase, action: str) -> float:
    done = group.requests.get(action, {"count": 0.0, "seconds": 0.0})
    return done["seconds"] / done["count"] if done["count"] else 0.0


def _commands(group: Phase) -> float:
    """Node commands per volume, without the daemon's health probe (which runs on a timer)."""
    counted = (v["count"] for k, v in group.commands.items() if k not in ("true", "gluster_pool_list"))
    return sum(counted) / max(1, group.volumes)


def _step(group: Phase | None, step: str) -> float:
    if group is None or not group.volumes:
        return 0.0
    return group.steps.get(step, {}).get("seconds", 0.0) / group.volumes


def print_tables(compared: list[dict[str, Any]], broken_down: list[dict[str, Any]]) -> None:
    for action, end in (("provision", "claim created -> Bound"), ("delete", "claim deleted -> PV gone")):
        print(f"\n{action.capitalize()}: kubernetes = {end}; events = request produced -> result consumed (seconds)")
        rows: list[tuple[object, ...]] = []
        for c in (c for c in compared if c["action"] == action):
            for path in (KUBE, EVENTS):
                s = c[path]
                ratios = (f"{c['p50_ratio']:.2f}", f"{c['wall_ratio']:.2f}") if path == KUBE else ("", "")
                rows.append((c["mode"], path, c["samples"], s["p50"], s["p90"], s["max"], s["wall"], *ratios))
        print(table(("mode", "path", "N", "p50", "p90", "max", "wall", "p50 k8s/floor", "wall k8s/floor"), rows))
    for action, steps in (("provision", PROVISION_STEPS), ("delete", DELETE_STEPS)):
        labels = [label for label, _, _, _ in steps]
        print(f"\nWhere the Kubernetes path's {action} time goes: mean seconds per claim")
        rows = [
            (
                b["mode"],
                b["mean_latency"],
                *("-" if b["intervals"][label] is None else b["intervals"][label] for label in labels),
                b["handler"],
                b["kubernetes_step"],
                *((b["brick_step"],) if action == "provision" else ()),
                f"{b['ssh_commands_per_volume']:.1f}",
                b["floor_mean_latency"] or 0.0,
                b["floor_handler"] or 0.0,
                *((b["floor_brick_step"],) if action == "provision" else ()),
                f"{b['floor_ssh_commands_per_volume'] or 0.0:.1f}",
            )
            for b in broken_down
            if b["action"] == action
        ]
        bricks = ("bricks",) if action == "provision" else ()
        headers = (
            "mode",
            "k8s",
            *labels,
            "handler",
            "kube",
            *bricks,
            "ssh/vol",
            "floor",
            "handler",
            *bricks,
            "ssh/vol",
        )
        print(table(headers, rows))
        for label, _, _, who in steps:
            print(f"  {label:<18} {who}")
    print(
        "  k8s, floor: mean latency of each path; handler: the daemon's seconds per request"
        " (provisioner_request_duration_seconds);\n  kube: its Kubernetes API calls per request; bricks: its"
        " brick_create step (the gid adds chown + chmod per brick); ssh/vol: node commands per volume"
    )


# --- entry point ----------------------------------------------------------------------------------


async def run(args: argparse.Namespace, report: Report) -> None:
    main = asyncio.current_task()
    assert main is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    stack = load_stack()
    stack.prefix = f"benchk{uuid.uuid4().hex[:8]}"
    args.kubeconfig = ensure_kube()
    run_id = stack.prefix[len("benchk") :]
    stamp = report.started.strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    logs = {who: RESULTS / f"kube-{stamp}.{who}.log" for who in ("daemon", "watch")}
    report.data["logs"] = {k: str(v.relative_to(REPO)) for k, v in logs.items()}
    nodes = json.loads(TOPOLOGY.read_text())["clusters"][0]["nodes"]
    topology = cluster_from(models.LoadTopology.model_validate({"cluster": f"kube-{run_id}", "nodes": nodes}))
    executor = MeasuredExecutor(stack.ssh())
    async with api_client(args.kubeconfig) as api:
        bench = Run(args, stack, api, run_id=run_id, logs=logs, cluster=topology, executor=executor)
        report.data["run"] = {
            "prefix": stack.prefix,
            "cluster": bench.cluster,
            "namespace": bench.namespace,
            "provisioner": bench.provisioner,
            "storage_class": bench.storage_class,
        }
        try:
            await bench.set_up()
            others = await gluster_volumes(executor, topology.nodes[0].manage)
            report.data["other_gluster_volumes_at_start"] = len(others)
            print(f"daemon and watcher up ({bench.namespace}, {len(others)} other gluster volumes)", flush=True)
            await bench.phases()
        finally:
            report.data["groups"] = [g.as_json() for g in bench.groups.values()]
            print("  cleaning up ...", flush=True)
            notes = await bench.clean_up()
            report.data["cleanup"] = notes
            report.data["claims_made"] = len(bench.all_claim_uids)
            report.data["volumes_made"] = len(bench.made)
            print(
                f"  {len(bench.all_claim_uids)} claims, {len(bench.made)} volumes made and removed; "
                f"leftovers: {notes.get('leftovers') or 'none'}",
                flush=True,
            )
            await executor.close()
            with contextlib.suppress(Exception):
                await delete_topics(stack)
    compared = comparisons(bench.groups)
    broken_down = breakdown(bench.groups)
    report.data["comparison"] = compared
    report.data["breakdown"] = broken_down
    print_tables(compared, broken_down)


def main() -> int:
    parser = common.parser("kube", __doc__)
    parser.add_argument(
        "--n",
        type=counts,
        default=[1, 10],
        help="claim counts: 1 = one at a time (--repeat samples), N > 1 = N created at once (default 1,10)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the one-at-a-time row (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed claims and requests through each path first")
    parser.add_argument("--size", type=size, default=GiB, help="volume size, e.g. 1GiB (default; whole GiB)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for one phase (default 600)")
    args = parser.parse_args()
    if args.size % GiB:
        parser.error("--size must be whole GiB (a claim's size is rounded up to whole GiB)")
    return common.run_bench("kube", args, run, replica=3)


if __name__ == "__main__":
    sys.exit(main())
