"""The worker's Kubernetes hooks, against a fake node cluster and a fake ``ClaimPublisher``.

A request naming a claim gets its PV published once the volume is online (and the PV name in the
result); a claim that is gone gets no storage; a PV that cannot be published takes its volume back
down; a delete withdraws the claim's objects only after the storage is gone; an expand has the PV
and claim follow the new size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from provisioner.delivery.outcome import Outcome
from provisioner.domain import VolumeId, VolumeStatus
from provisioner.errors import (
    KubernetesConflict,
    KubernetesForbidden,
    KubernetesInvalid,
    KubernetesUnavailable,
    PersistentVolumeTaken,
    ProvisionerError,
)
from provisioner.events import catalog, models, results
from provisioner.events.envelope import Event, new_event
from provisioner.executor import Argv
from provisioner.kube import names
from provisioner.settings import Settings
from provisioner.state import StateChange
from provisioner.watch.decisions import claim_volume_id
from tests import fakes
from tests.fakes import FakeNodes, Intent, failure

GiB = 1024**3
UID = "0b7c3f2e-4d1a-4c6b-9e8f-1a2b3c4d5e6f"
CLAIM = models.ClaimRef(namespace="apps", name="data", uid=UID)
PV = names.pv_name(UID)
OBJECTS = models.ClaimObjects(persistent_volume=PV, namespace="apps", service=names.service_name(UID))
RESIZE = models.ClaimResize(persistent_volume=PV, claim=CLAIM)


class Nodes(FakeNodes):
    """``tests.fakes.FakeNodes`` that also accepts commands it does not model (the fstab edits, a
    ``sh -c`` script): they succeed and change nothing, so these tests follow the storage layer."""

    def _execute(self, host: str, argv: Argv) -> tuple[int, str, str]:
        status, out, err = super()._execute(host, argv)
        if status == 127 and err.startswith("fake: unknown command"):
            return 0, "", ""
        return status, out, err


@dataclass
class Call:
    name: str
    args: tuple[Any, ...]
    node_calls: int  # how many node commands had run when this call came
    recorded: int  # how many state changes had been recorded as intent by then


@dataclass
class Claims:
    """A ``ClaimPublisher`` that records its calls; ``*_failures`` are raised one per call, in order."""

    nodes: FakeNodes
    intent: Intent | None = None  # set once the world has one
    exists: bool = True
    publish_failures: list[ProvisionerError] = field(default_factory=list)
    withdraw_failures: list[ProvisionerError] = field(default_factory=list)
    withdrawn_for: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)

    def _record(self, name: str, *args: Any) -> None:
        recorded = len(self.intent.recorded) if self.intent is not None else 0
        self.calls.append(Call(name, args, len(self.nodes.calls), recorded))

    def named(self, name: str) -> list[Call]:
        return [call for call in self.calls if call.name == name]

    async def claim_exists(self, claim: models.ClaimRef) -> bool:
        self._record("claim_exists", claim)
        return self.exists

    async def provisioning(self, spec: models.ClaimVolume) -> None:
        self._record("provisioning", spec)

    async def publish(self, spec: models.ClaimVolume, volume: results.VolumeOut) -> str:
        self._record("publish", spec, volume)
        if self.publish_failures:
            raise self.publish_failures.pop(0)
        return names.pv_name(spec.claim.uid)

    async def withdraw(
        self, objects: models.ClaimObjects, *, cluster: str, volume_id: str | None, name: str | None
    ) -> None:
        self._record("withdraw", objects)
        self.withdrawn_for.append((cluster, volume_id, name))
        if self.withdraw_failures:
            raise self.withdraw_failures.pop(0)

    async def resized(self, resize: models.ClaimResize, size: int) -> None:
        self._record("resized", resize, size)

    async def event(self, claim: models.ClaimRef, reason: str, message: str, *, warning: bool = False) -> None:
        self._record("event", claim, reason, message, warning)


class World(fakes.World):
    """The handler with a recording Kubernetes port (``claims``), or none (``kubernetes=False``)."""

    def __init__(self, *, nodes: int = 3, kubernetes: bool = True) -> None:
        fake = Nodes()
        self.claims = Claims(fake)
        super().__init__(nodes, fake=fake, objects=self.claims if kubernetes else None)
        self.claims.intent = self.intent

    def request(self, **fields: Any) -> Event:
        spec = models.ClaimVolume(claim=CLAIM, storage_class="gold", provisioner="gluster.org/glusterfs")
        data = models.ProvisionVolume.model_validate(
            {
                "cluster": "dev",
                "size": GiB,
                "volume_id": claim_volume_id(UID),
                "gid": 40000,
                "kubernetes": spec.model_dump(),
                **fields,
            }
        )
        return new_event(catalog.PROVISION_REQUESTED, data, source="/t", subject=data.volume_id)

    async def provision(self, **fields: Any) -> Outcome:
        return await self.handle(self.request(**fields))

    async def delete(self, **fields: Any) -> Outcome:
        data = models.DeleteVolume.model_validate({"cluster": "dev", "volume_id": claim_volume_id(UID), **fields})
        return await self.handle(new_event(catalog.DELETE_REQUESTED, data, source="/t"))

    async def grow(self, size: int, **fields: Any) -> Outcome:
        return await self.expand(volume_id=claim_volume_id(UID), size=size, **fields)


def nothing_left_on_the_nodes(world: World) -> bool:
    return world.nodes.volumes == {} and world.nodes.mounts == {} and world.nodes.files == set()


# --- provision --------------------------------------------------------------------------------------


async def test_provision_for_a_claim_publishes_its_pv() -> None:
    world = World()
    await world.load()
    outcome = await world.provision()
    data = outcome.result.data
    assert isinstance(data, results.VolumeProvisioned), data
    assert data.persistent_volume == PV
    assert data.volume.volume_id == claim_volume_id(UID) and data.volume.gid == 40000
    [publish] = world.claims.named("publish")
    spec, volume = publish.args
    assert spec.claim == CLAIM
    assert volume == data.volume  # the PV describes the volume the result announces
    assert world.nodes.volumes[volume.name].started
    assert world.state.volumes[VolumeId(volume.volume_id)].status is VolumeStatus.ONLINE
    assert world.claims.named("event") == [] and world.claims.named("withdraw") == []


async def test_the_claim_is_checked_and_told_before_any_node_work() -> None:
    world = World()
    await world.load()
    await world.provision()
    names_in_order = [call.name for call in world.claims.calls]
    assert names_in_order == ["claim_exists", "provisioning", "publish"]
    exists, provisioning, publish = world.claims.calls
    assert (exists.node_calls, exists.recorded) == (0, 0)
    assert (provisioning.node_calls, provisioning.recorded) == (0, 0)  # before the intent and any brick
    request = world.request().data
    assert isinstance(request, models.ProvisionVolume)
    assert provisioning.args == (request.kubernetes,)
    assert publish.node_calls == len(world.nodes.calls)  # after all node work


async def test_a_claim_that_is_gone_gets_no_storage() -> None:
    world = World()
    await world.load()
    world.claims.exists = False
    outcome = await world.provision()
    failed = failure(outcome)
    assert failed.reason == "ClaimGone"
    assert UID in failed.message and not failed.retriable
    assert world.nodes.calls == []
    assert world.intent.recorded == [] and outcome.changes == () and world.state.volumes == {}
    assert [call.name for call in world.claims.calls] == ["claim_exists", "event"]
    [event] = world.claims.named("event")
    assert event.args[:2] == (CLAIM, "ProvisioningFailed") and event.args[3] is True


async def test_a_pv_that_cannot_be_published_takes_its_volume_down() -> None:
    world = World()
    await world.load()
    world.claims.publish_failures = [KubernetesInvalid("PersistentVolume is invalid")]
    outcome = await world.provision()
    failed = failure(outcome)
    assert failed.reason == "KubernetesInvalid" and not failed.retriable
    assert failed.volume_id == claim_volume_id(UID)
    assert nothing_left_on_the_nodes(world), "the bricks were not rolled back"
    assert world.state.volumes == {}
    assert outcome.changes == (StateChange.delete_volume(VolumeId(claim_volume_id(UID))),)
    [withdraw] = world.claims.named("withdraw")
    assert withdraw.args == (OBJECTS,)
    [event] = world.claims.named("event")
    claim, reason, message, warning = event.args
    assert (claim, reason, warning) == (CLAIM, "ProvisioningFailed", True)
    assert message.startswith("KubernetesInvalid: ")


async def test_a_pv_name_taken_by_another_claim_is_not_withdrawn() -> None:
    world = World()
    await world.load()
    world.claims.publish_failures = [PersistentVolumeTaken("not for this claim")]
    outcome = await world.provision()
    assert failure(outcome).reason == "PersistentVolumeTaken"
    assert world.claims.named("withdraw") == []  # the objects belong to someone else
    assert nothing_left_on_the_nodes(world) and world.state.volumes == {}


async def test_a_publish_failing_for_a_while_is_retried() -> None:
    world = World()
    await world.load()
    busy = KubernetesUnavailable("apiserver busy", delay=2.0)
    world.claims.publish_failures = [busy, busy]
    outcome = await world.provision()
    data = outcome.result.data
    assert isinstance(data, results.VolumeProvisioned), data
    assert data.persistent_volume == PV
    assert len(world.claims.named("publish")) == 3
    assert world.sleeps[-2:] == [2.0, 2.0]  # the error's delay, at least
    assert world.claims.named("withdraw") == [] and world.claims.named("event") == []
    assert world.nodes.volumes[data.volume.name].started


async def test_a_publish_failing_on_every_attempt_is_answered_retriable_and_rolled_back() -> None:
    world = World()
    await world.load()
    busy = KubernetesUnavailable("apiserver away", delay=2.0)
    world.claims.publish_failures = [busy] * Settings().worker.max_attempts
    failed = failure(await world.provision())
    assert failed.reason == "KubernetesUnavailable" and failed.retriable
    assert len(world.claims.named("publish")) == Settings().worker.max_attempts
    assert nothing_left_on_the_nodes(world) and world.state.volumes == {}
    assert [call.args for call in world.claims.named("withdraw")] == [(OBJECTS,)]


async def test_a_repeated_provision_publishes_again_and_succeeds() -> None:
    world = World()
    await world.load()
    event = world.request()
    first = await world.handle(event)
    node_calls = len(world.nodes.calls)
    again = await world.handle(event)
    assert isinstance(first.result.data, results.VolumeProvisioned)
    assert isinstance(again.result.data, results.VolumeProvisioned)
    assert again.result.data.volume == first.result.data.volume
    assert again.result.data.persistent_volume == PV
    assert len(world.claims.named("publish")) == 2
    assert len(world.claims.named("claim_exists")) == 1  # an online volume is answered, not re-checked
    assert len(world.nodes.calls) == node_calls  # and not rebuilt
    assert again.changes == ()


async def test_a_repeated_provision_whose_publish_fails_keeps_the_volume() -> None:
    world = World()
    await world.load()
    event = world.request()
    await world.handle(event)
    world.claims.publish_failures = [KubernetesForbidden("forbidden")]
    again = await world.handle(event)
    assert failure(again).reason == "KubernetesForbidden"
    assert world.state.volumes[VolumeId(claim_volume_id(UID))].status is VolumeStatus.ONLINE
    assert len(world.nodes.volumes) == 1 and world.claims.named("withdraw") == []
    assert [call.args[1] for call in world.claims.named("event")] == ["ProvisioningFailed"]


async def test_a_claim_on_a_worker_without_kubernetes_is_refused() -> None:
    world = World(kubernetes=False)
    await world.load()
    failed = failure(await world.provision())
    assert failed.reason == "KubernetesDisabled"
    assert "PROVISIONER_KUBERNETES__ENABLED" in failed.message
    assert world.nodes.calls == [] and world.state.volumes == {}


async def test_a_request_without_a_claim_never_calls_the_publisher() -> None:
    world = World()
    await world.load()
    outcome = await world.provision(kubernetes=None)
    assert isinstance(outcome.result.data, results.VolumeProvisioned)
    assert outcome.result.data.persistent_volume is None
    assert world.claims.calls == []


# --- delete -------------------------------------------------------------------------------------------


async def test_delete_withdraws_the_objects_after_the_storage_is_gone() -> None:
    world = World()
    await world.load()
    await world.provision()
    outcome = await world.delete(kubernetes=OBJECTS.model_dump())
    data = outcome.result.data
    assert isinstance(data, results.VolumeDeleted), data
    assert data.existed and data.persistent_volume == PV
    assert nothing_left_on_the_nodes(world) and world.state.volumes == {}
    [withdraw] = world.claims.named("withdraw")
    assert withdraw.args == (OBJECTS,)
    assert withdraw.node_calls == len(world.nodes.calls), "withdrawn before the storage was removed"
    deletes = [i for i, (_, argv) in enumerate(world.nodes.calls) if "delete" in argv]
    assert deletes and deletes[-1] < withdraw.node_calls


async def test_delete_of_a_volume_already_gone_still_withdraws() -> None:
    world = World()
    await world.load()
    outcome = await world.delete(kubernetes=OBJECTS.model_dump())
    data = outcome.result.data
    assert isinstance(data, results.VolumeDeleted), data
    assert not data.existed and data.persistent_volume == PV
    assert [call.args for call in world.claims.named("withdraw")] == [(OBJECTS,)]
    assert world.nodes.calls == []


async def test_delete_whose_withdraw_fails_for_a_while_is_retried() -> None:
    world = World()
    await world.load()
    await world.provision()
    world.claims.withdraw_failures = [KubernetesConflict("conflict", delay=0.5)]
    outcome = await world.delete(kubernetes=OBJECTS.model_dump())
    assert isinstance(outcome.result.data, results.VolumeDeleted) and outcome.result.data.existed
    assert len(world.claims.named("withdraw")) == 2
    assert world.state.volumes == {}


async def test_delete_without_a_claim_never_calls_the_publisher() -> None:
    world = World()
    await world.load()
    await world.provision(kubernetes=None)
    outcome = await world.delete()
    assert isinstance(outcome.result.data, results.VolumeDeleted) and outcome.result.data.persistent_volume is None
    assert world.claims.calls == []


async def test_delete_naming_a_claim_on_a_worker_without_kubernetes_touches_nothing() -> None:
    world = World(kubernetes=False)
    await world.load()
    await world.provision(kubernetes=None)
    node_calls = len(world.nodes.calls)
    outcome = await world.delete(kubernetes=OBJECTS.model_dump())
    assert failure(outcome).reason == "KubernetesDisabled"
    assert len(world.nodes.calls) == node_calls, "the storage was removed although the request is refused"


# --- expand -------------------------------------------------------------------------------------------


async def test_expand_has_the_pv_follow_the_new_size() -> None:
    world = World()
    await world.load()
    await world.provision()
    outcome = await world.grow(2 * GiB, kubernetes=RESIZE.model_dump())
    data = outcome.result.data
    assert isinstance(data, results.VolumeExpanded), data
    assert data.added_bricks == 3 and data.persistent_volume == PV
    [resized] = world.claims.named("resized")
    assert resized.args == (RESIZE, 2 * GiB)
    assert resized.node_calls == len(world.nodes.calls)  # after the bricks joined
    assert world.state.volumes[VolumeId(claim_volume_id(UID))].size == 2 * GiB


async def test_a_repeated_expand_resizes_again_without_node_work() -> None:
    world = World()
    await world.load()
    await world.provision()
    await world.grow(2 * GiB, kubernetes=RESIZE.model_dump())
    node_calls = len(world.nodes.calls)
    again = await world.grow(2 * GiB, kubernetes=RESIZE.model_dump())
    assert isinstance(again.result.data, results.VolumeExpanded) and again.result.data.added_bricks == 0
    assert [call.args for call in world.claims.named("resized")] == [(RESIZE, 2 * GiB), (RESIZE, 2 * GiB)]
    assert len(world.nodes.calls) == node_calls


async def test_a_no_op_expand_of_a_volume_with_room_reports_the_requested_size() -> None:
    """A disperse 2+1 volume of 1 GiB has two 1 GiB data bricks (the minimum brick size), so 2 GiB
    need no new set; the claim asked for 2 GiB and its PV must say so, or the watcher asks forever."""
    world = World()
    await world.load()
    await world.provision(durability={"type": "disperse", "data": 2, "redundancy": 1})
    outcome = await world.grow(2 * GiB, kubernetes=RESIZE.model_dump())
    data = outcome.result.data
    assert isinstance(data, results.VolumeExpanded), data
    assert data.added_bricks == 0
    [resized] = world.claims.named("resized")
    assert resized.args[1] >= 2 * GiB, f"the PV is set to {resized.args[1]} bytes, the claim asked for {2 * GiB}"


async def test_expand_without_a_claim_never_calls_the_publisher() -> None:
    world = World()
    await world.load()
    await world.provision(kubernetes=None)
    outcome = await world.grow(2 * GiB)
    assert isinstance(outcome.result.data, results.VolumeExpanded) and outcome.result.data.persistent_volume is None
    assert world.claims.calls == []


async def test_expand_naming_a_claim_on_a_worker_without_kubernetes_touches_nothing() -> None:
    world = World(kubernetes=False)
    await world.load()
    await world.provision(kubernetes=None)
    node_calls = len(world.nodes.calls)
    outcome = await world.grow(2 * GiB, kubernetes=RESIZE.model_dump())
    assert failure(outcome).reason == "KubernetesDisabled"
    assert len(world.nodes.calls) == node_calls, "the volume was grown although the request is refused"
