"""The request loop's partition set-up and rebuild, against a fake consumer and fake publishers:
the order of a set-up (fence, then state, then offset), set-up kept out of aiokafka's rebalance
callback and retried when it fails, and a lane that breaks or is fenced replaced with a fresh
producer while its partition stays served."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from aiokafka import TopicPartition

from provisioner.bus import consumer as consumer_module
from provisioner.bus.consumer import RequestLoop, consumer_options
from provisioner.bus.lane import Broken
from provisioner.bus.state_topic import StateTopicReader
from provisioner.delivery.ledger import Ledger
from provisioner.delivery.outcome import IntentWriter, Outcome
from provisioner.errors import KafkaUnavailable
from provisioner.events.envelope import Event
from provisioner.settings import KafkaSettings

TP = TopicPartition("gluster.requests", 0)


@dataclass
class Calls:
    """Every call the loop makes on the fakes, in order."""

    made: list[str] = field(default_factory=list)
    failing_starts: int = 0  # how many publisher starts fail before one succeeds


class FakePublisher:
    instances: list[FakePublisher] = []
    calls = Calls()

    def __init__(self, settings: KafkaSettings, partition: TopicPartition, **_: Any) -> None:
        self.partition = partition
        self.stopped = False
        FakePublisher.instances.append(self)

    async def start(self) -> None:
        self.calls.made.append("publisher.start")
        if self.calls.failing_starts > 0:
            self.calls.failing_starts -= 1
            raise KafkaUnavailable("the broker does not answer")

    async def stop(self) -> None:
        self.calls.made.append("publisher.stop")
        self.stopped = True


class FakeReader:
    def __init__(self, calls: Calls) -> None:
        self.calls = calls
        self.ledger = Ledger()

    async def catch_up(self) -> int:
        self.calls.made.append("state.catch_up")
        return 0

    def applied(self, *_: Any) -> None:
        pass


class FakeConsumer:
    def __init__(self, calls: Calls) -> None:
        self.calls = calls
        self.assigned = {TP}
        self.paused: set[TopicPartition] = set()
        self.sought: list[int] = []

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def pause(self, tp: TopicPartition) -> None:
        self.paused.add(tp)

    def resume(self, tp: TopicPartition) -> None:
        self.paused.discard(tp)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.sought.append(offset)

    async def committed(self, tp: TopicPartition) -> int:
        self.calls.made.append("consumer.committed")
        return 42

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}


async def handler(event: Event, intent: IntentWriter) -> Outcome:
    raise AssertionError("no record is offered in these tests")


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    FakePublisher.instances = []
    FakePublisher.calls = Calls()
    monkeypatch.setattr(consumer_module, "PartitionPublisher", FakePublisher)
    monkeypatch.setattr(consumer_module, "SETUP_RETRY", 0.0)
    return FakePublisher.calls


def request_loop(calls: Calls) -> tuple[RequestLoop, FakeConsumer]:
    loop = RequestLoop(
        KafkaSettings(),
        cast(StateTopicReader, FakeReader(calls)),
        handler,
        lambda _: None,
        max_in_flight=4,
        grace=5.0,
    )
    fake = FakeConsumer(calls)
    loop._consumer = fake
    return loop, fake


async def test_assignment_only_marks_and_the_loop_sets_up_fence_first_then_state_then_offset(calls: Calls) -> None:
    loop, fake = request_loop(calls)
    loop.assigned({TP})  # inside aiokafka's rebalance callback: an exception there would be swallowed
    assert calls.made == [] and fake.paused == {TP} and not loop.owns("dev")
    await loop._tend(fake)
    assert calls.made == ["publisher.start", "state.catch_up", "consumer.committed"]
    assert fake.sought == [42] and fake.paused == set()
    assert loop.owns("dev")


async def test_a_set_up_that_fails_is_tried_again_and_leaves_nothing_open(calls: Calls) -> None:
    loop, fake = request_loop(calls)
    calls.failing_starts = 1
    loop.assigned({TP})
    await loop._tend(fake)
    assert calls.made == ["publisher.start", "publisher.stop"] and not loop.owns("dev")
    assert fake.paused == {TP}, "the partition waits, it is not read without a lane"
    await loop._tend(fake)
    assert loop.owns("dev") and fake.sought == [42]


@pytest.mark.parametrize("how", ["broken", "lost"])
async def test_a_broken_or_fenced_lane_is_rebuilt_with_a_fresh_producer(calls: Calls, how: str) -> None:
    """An abortable error poisons a producer for every later transaction, and a fenced lane must not
    leave its partition assigned but idle: either way the partition gets a new producer and lane."""
    loop, fake = request_loop(calls)
    loop.assigned({TP})
    await loop._tend(fake)
    first = loop._lanes[TP]
    if how == "broken":
        first.broken = Broken(7, "KafkaUnavailable: transaction failed")
    else:
        first.lost = True
    assert not loop.owns("dev"), "a cluster whose lane is down is not reconciled by this replica"
    calls.made.clear()
    await loop._tend(fake)
    assert calls.made == ["publisher.stop", "publisher.start", "state.catch_up", "consumer.committed"]
    old, new = FakePublisher.instances
    assert old.stopped and not new.stopped
    assert loop._lanes[TP] is not first and loop.owns("dev")


async def test_a_partition_revoked_during_its_set_up_is_not_kept(calls: Calls) -> None:
    loop, fake = request_loop(calls)
    loop.assigned({TP})
    fake.assigned = set()
    await loop._tend(fake)
    assert calls.made == [] and TP not in loop._lanes


def test_the_group_waits_for_a_revoke_drain_before_it_evicts_a_member() -> None:
    """A member drains its lanes for ``grace`` seconds when partitions are revoked, then commits:
    a rebalance timeout shorter than that (10 s against a 30 s drain) evicted busy members mid-commit."""
    settings = KafkaSettings(request_timeout=30.0, session_timeout=10.0)
    options = consumer_options(settings, grace=30.0, batch=16)
    assert options["rebalance_timeout_ms"] >= (30.0 + 30.0) * 1000
    assert options["session_timeout_ms"] == 10_000 and options["heartbeat_interval_ms"] == 2_500
    assert options["isolation_level"] == "read_committed" and options["enable_auto_commit"] is False
