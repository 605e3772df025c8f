"""Claims, PVs, classes and fakes of the Kubernetes API shared by the tests of this package."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, cast

import pytest
from kubernetes_asyncio import client
from prometheus_client import REGISTRY

from provisioner.events import models, results
from provisioner.events.envelope import Event
from provisioner.kube import names
from provisioner.kube.objects import KubeObjects
from provisioner.settings import Settings
from provisioner.watch.bridge import ClaimBridge
from provisioner.watch.informer import Informer, Obj, Source
from provisioner.watch.storage_class import ClassParameters, class_parameters

GiB = 1024**3
UID = "0b7c3f2e-4d1a-4c6b-9e8f-1a2b3c4d5e6f"
PV_UID = "9f8e7d6c-5b4a-4321-8fed-cba987654321"
PROVISIONER = "gluster.org/glusterfs"
VOLUME_ID = "a" * 32


def claim_ref(name: str = "data") -> models.ClaimRef:
    return models.ClaimRef(namespace="apps", name=name, uid=UID)


def claim_volume(**fields: Any) -> models.ClaimVolume:
    return models.ClaimVolume.model_validate(
        {"claim": claim_ref().model_dump(), "storage_class": "gold", "provisioner": PROVISIONER, **fields}
    )


def volume_out(
    *, gid: int | None = 2001, mount: str = "10.0.0.1:/vol_a", backups: tuple[str, ...] = ("10.0.0.2", "10.0.0.3")
) -> results.VolumeOut:
    return results.VolumeOut(
        cluster="dev",
        volume_id=VOLUME_ID,
        name="vol_a",
        size=GiB,
        durability=models.ReplicateSpec(),
        bricks=[],
        mount=mount,
        backup_servers=list(backups),
        gid=gid,
    )


CLAIM_REFERENCE = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "apps", "name": "data", "uid": UID}


def pv_annotations(*, gid: str | None) -> dict[str, str]:
    notes = {
        "pv.kubernetes.io/provisioned-by": PROVISIONER,
        "gluster.org/volume-id": VOLUME_ID,
        "gluster.org/volume-name": "vol_a",
        "gluster.org/cluster": "dev",
        "gluster.org/type": "file",
        "Description": "Gluster-Internal: Dynamically provisioned PV",
    }
    if gid is not None:
        notes["pv.beta.kubernetes.io/gid"] = gid
    return notes


def service_metadata(label: str = "data") -> dict[str, Any]:
    return {
        "name": f"glusterfs-dynamic-{UID}",
        "namespace": "apps",
        "labels": {"gluster.kubernetes.io/provisioned-for-pvc": label},
        "annotations": {
            "pv.kubernetes.io/provisioned-by": PROVISIONER,
            "gluster.org/volume-id": VOLUME_ID,
            "gluster.org/volume-name": "vol_a",
            "gluster.org/cluster": "dev",
        },
    }


def claim(
    *,
    storage: str | None = "1500Mi",
    annotations: dict[str, str] | None = None,
    phase: str | None = "Pending",
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {
            "name": "data",
            "namespace": "apps",
            "uid": UID,
            "resourceVersion": "7",
            "annotations": {names.STORAGE_PROVISIONER: PROVISIONER} if annotations is None else annotations,
        },
        "spec": {"storageClassName": "gold", **spec},
    }
    if storage is not None:
        body["spec"]["resources"] = {"requests": {"storage": storage}}
    if phase is not None:
        body["status"] = {"phase": phase}
    return body


STORAGE_CLASS = {
    "metadata": {"name": "gold"},
    "provisioner": PROVISIONER,
    "reclaimPolicy": "Retain",
    "mountOptions": ["log-level=ERROR"],
    "parameters": {"cluster": "dev", "volumetype": "replicate:2", "volumeoptions": "performance.readdir-ahead on"},
}


def params() -> ClassParameters:
    return class_parameters("gold", STORAGE_CLASS["parameters"])  # type: ignore[arg-type]


def pv(
    *, phase: str = "Released", policy: str = "Delete", provisioner: str = PROVISIONER, capacity: str = "2Gi"
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"pvc-{UID}",
            "uid": PV_UID,
            "annotations": {
                names.PROVISIONED_BY: provisioner,
                names.VOLUME_ID: VOLUME_ID,
                names.CLUSTER: "dev",
                names.GID: "40001",
            },
        },
        "spec": {
            "persistentVolumeReclaimPolicy": policy,
            "capacity": {"storage": capacity},
            "claimRef": {"namespace": "apps", "name": "data", "uid": UID},
        },
        "status": {"phase": phase},
    }


def bound(storage: str) -> dict[str, Any]:
    return claim(storage=storage, phase="Bound", volumeName=f"pvc-{UID}")


ListStep = tuple[list[Obj], str] | BaseException
WatchStep = list[tuple[str, Obj]] | BaseException


class ScriptedSource:
    """Plays lists and watch streams in order; when a script runs out it behaves like an idle server:
    a watch ends after its timeout with nothing in it, a list never answers."""

    def __init__(self, lists: Sequence[ListStep], watches: Sequence[WatchStep]) -> None:
        self.lists = list(lists)
        self.watches = list(watches)
        self.list_calls: list[float] = []
        self.watched_from: list[str] = []

    async def list_all(self) -> tuple[list[Obj], str]:
        self.list_calls.append(time.monotonic())
        if not self.lists:
            await asyncio.Event().wait()
        step = self.lists.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step

    async def watch_from(self, resource_version: str, timeout: float) -> AsyncIterator[tuple[str, Obj]]:
        self.watched_from.append(resource_version)
        await asyncio.sleep(0)
        if not self.watches:
            await asyncio.sleep(timeout)
            return
        step = self.watches.pop(0)
        if isinstance(step, BaseException):
            raise step
        for event in step:
            yield event

    def source(self, kind: str = "persistentvolumeclaims") -> Source:
        return Source(kind=kind, list_all=self.list_all, watch_from=self.watch_from)


def obj(name: str, version: str) -> Obj:
    return {"metadata": {"name": name, "resourceVersion": version}}


class Handlers:
    def __init__(self) -> None:
        self.lists: list[list[str]] = []
        self.events: list[tuple[str, str]] = []

    async def on_list(self, items: Sequence[Obj]) -> None:
        self.lists.append([item["metadata"]["name"] for item in items])

    async def on_event(self, kind: str, item: Obj) -> None:
        self.events.append((kind, item["metadata"].get("name", "")))


async def until(condition: Callable[[], bool], *, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        await asyncio.sleep(0.001)


async def play(
    scripted: ScriptedSource,
    done: Callable[[Handlers], bool],
    *,
    resync: float = 3600.0,
    retry: float = 2.0,
    kind: str = "persistentvolumeclaims",
) -> tuple[Handlers, Informer]:
    handlers = Handlers()
    informer = Informer(
        scripted.source(kind), on_list=handlers.on_list, on_event=handlers.on_event, resync=resync, retry=retry
    )
    task = asyncio.create_task(informer.run())
    try:
        await until(lambda: done(handlers) or task.done())
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    return handlers, informer


def relists(kind: str, reason: str) -> float:
    value = REGISTRY.get_sample_value("provisioner_watch_relists_total", {"resource": kind, "reason": reason})
    return value or 0.0


class FakeApi:
    """What ClaimBridge asks of the ApiClient itself; every API call goes to the fakes below."""

    def sanitize_for_serialization(self, found: Any) -> Any:
        return found


class FakeStorage:
    def __init__(self, classes: dict[str, Obj]) -> None:
        self.classes = classes
        self.reads: list[str] = []

    async def read_storage_class(self, name: str) -> Obj:
        self.reads.append(name)
        if name not in self.classes:
            raise client.ApiException(status=404, reason="Not Found")
        return self.classes[name]


class FakeCore:
    def __init__(self) -> None:
        self.patches: list[tuple[str, str, Obj]] = []
        self.fail_with: int | None = None

    async def patch_namespaced_persistent_volume_claim(self, name: str, namespace: str, body: Obj) -> Obj:
        if self.fail_with is not None:
            raise client.ApiException(status=self.fail_with, reason="refused")
        self.patches.append((namespace, name, body))
        return {}


class FakeEvents:
    def __init__(self) -> None:
        self.events: list[tuple[models.ClaimRef, str, str, bool]] = []

    async def event(self, claim: models.ClaimRef, reason: str, message: str, *, warning: bool = False) -> None:
        self.events.append((claim, reason, message, warning))


class Bridge:
    def __init__(self, classes: dict[str, Obj] | None = None) -> None:
        self.sent: list[tuple[Event, str]] = []
        self.storage = FakeStorage({"gold": dict(GOLD)} if classes is None else classes)
        self.core = FakeCore()
        self.events = FakeEvents()
        self.bridge = ClaimBridge(cast(client.ApiClient, FakeApi()), self.send, Settings())
        self.bridge._storage = cast(client.StorageV1Api, self.storage)
        self.bridge._core = cast(client.CoreV1Api, self.core)
        self.bridge._objects = cast(KubeObjects, self.events)

    async def send(self, event: Event, key: str) -> None:
        self.sent.append((event, key))


GOLD: Obj = {
    "metadata": {"name": "gold"},
    "provisioner": PROVISIONER,
    "parameters": {"cluster": "dev", "gidMin": "40000", "gidMax": "40010"},
}


def other_claim(uid: str, name: str, **fields: Any) -> dict[str, Any]:
    body = claim(**fields)
    body["metadata"].update(uid=uid, name=name)
    return body


class UnreachableApi:
    """An ApiClient whose every call fails as if the API server were away."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise ConnectionRefusedError(f"{name}: apiserver away")

        return refuse


class StandingLease:
    def __init__(self) -> None:
        self.lost = asyncio.Event()
