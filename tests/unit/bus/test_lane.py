"""The lane against a fake transactional publisher: what it commits, in which order, and what a
failed commit leaves behind (nothing applied, the lane broken for the consumer to rebuild)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from aiokafka import TopicPartition

from provisioner.bus.lane import Lane
from provisioner.bus.publisher import PartitionPublisher, Position
from provisioner.bus.records import Outgoing, Records, Topics
from provisioner.bus.state_topic import StateTopicReader
from provisioner.delivery.ledger import Ledger, ledger_key
from provisioner.delivery.outcome import IntentWriter, Outcome
from provisioner.delivery.schedule import Keys
from provisioner.errors import KafkaUnavailable
from provisioner.events import catalog, models, results
from provisioner.events.envelope import Event, encode, new_event
from provisioner.handling.results import succeeded
from provisioner.settings import KafkaSettings
from provisioner.state import DesiredState, StateChange

TP = TopicPartition("requests", 0)
TOPICS = Topics(results="results", state="state", dlq="dlq")


@dataclass
class Record:
    offset: int
    value: bytes | None
    key: bytes | None = b"dev"
    topic: str = "requests"
    partition: int = 0
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass
class Transaction:
    messages: list[Outgoing]
    commit_offset: int | None

    def topics(self) -> list[str]:
        return [m.topic for m in self.messages]


@dataclass
class FakePublisher:
    """Commits transactions in memory; ``fail_at`` makes the n-th publish (1-based) raise."""

    committed: list[Transaction] = field(default_factory=list)
    fail_at: set[int] = field(default_factory=set)
    calls: int = 0

    async def publish(self, messages: Sequence[Outgoing], *, commit_offset: int | None = None) -> list[Position]:
        self.calls += 1
        await asyncio.sleep(0)
        if self.calls in self.fail_at:
            raise KafkaUnavailable("transaction aborted by the broker")
        first = sum(len(t.messages) for t in self.committed)
        self.committed.append(Transaction(list(messages), commit_offset))
        return [(0, first + i) for i in range(len(messages))]

    def offsets(self) -> list[int]:
        return [t.commit_offset for t in self.committed if t.commit_offset is not None]

    def results(self) -> list[str]:
        """request ids of committed results, in commit order"""
        return [
            json.loads(m.value or b"")["data"]["request_id"]
            for t in self.committed
            for m in t.messages
            if m.topic == "results" and ".progressed." not in json.loads(m.value or b"")["type"]
        ]

    def dead_letters(self) -> list[tuple[str, int]]:
        return [
            (dict(m.headers)["dlq_reason"].decode(), int(dict(m.headers)["dlq_offset"]))
            for t in self.committed
            for m in t.messages
            if m.topic == "dlq"
        ]


def request(name: str) -> bytes:
    data = models.DeleteVolume(cluster="dev", name=name)
    value, _ = encode(new_event(catalog.DELETE_REQUESTED, data, source="/t", id_=f"req-{name}"))
    return value


class Handler:
    """Answers every delete as succeeded once its gate opens; records what ran at the same time."""

    def __init__(self, *, record_intent: bool = False) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.running: set[str] = set()
        self.overlaps: list[tuple[str, str]] = []
        self.record_intent = record_intent
        self.crash: set[str] = set()

    def gate(self, name: str) -> asyncio.Event:
        return self.gates.setdefault(name, asyncio.Event())

    async def __call__(self, event: Event, intent: IntentWriter) -> Outcome:
        data = event.data
        assert isinstance(data, models.DeleteVolume) and data.name is not None
        name = data.name.split("-")[0]  # "a-2" is a second request on volume a
        self.overlaps += [(name, other) for other in self.running if other == name]
        self.running.add(name)
        try:
            if self.record_intent:
                await intent.record([StateChange(f"cluster/{data.name}", b"{}")])
            await self.gate(data.name).wait()
            if data.name in self.crash:
                raise RuntimeError("a bug")
        finally:
            self.running.discard(name)
        gone = results.VolumeDeleted(request_id=event.id, cluster="dev", volume_id=None, name=data.name, existed=False)
        return succeeded(event, gone, key="dev", subject=None, source="/t")


def keys_of(event: Event) -> Keys | None:
    data = event.data
    assert isinstance(data, models.DeleteVolume) and data.name is not None
    return frozenset({data.name.split("-")[0]})


def lane(
    handler: Handler, publisher: FakePublisher, *, start: int = 0, ledger: Ledger | None = None, **kw: Any
) -> Lane:
    ledger = ledger or Ledger()
    reader = StateTopicReader(KafkaSettings(), DesiredState(), ledger)
    return Lane(
        TP,
        cast(PartitionPublisher, publisher),
        ledger=ledger,
        applied=reader.applied,
        handler=handler,
        keys_of=keys_of,
        records=Records(TOPICS),
        max_in_flight=kw.pop("max_in_flight", 8),
        start=start,
        **kw,
    )


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_out_of_order_finishes_commit_the_offset_in_order_with_ledger_entries() -> None:
    handler, publisher = Handler(), FakePublisher()
    subject = lane(handler, publisher, start=10)
    subject.offer([Record(10, request("a")), Record(11, request("b")), Record(12, request("c"))])
    await settle()
    assert handler.running == {"a", "b", "c"}, "different volumes run at once"
    handler.gate("c").set()
    handler.gate("b").set()
    await settle()
    # 12 and 11 finished first: answered with a ledger entry each, offset unchanged
    assert publisher.results() == ["req-c", "req-b"] and publisher.offsets() == []
    entries = [m.key for t in publisher.committed for m in t.messages if m.topic == "state"]
    assert entries == [ledger_key("requests", 0, 12).encode(), ledger_key("requests", 0, 11).encode()]
    handler.gate("a").set()
    await settle()
    # 10 closes the gap: one transaction moves the offset past 12 and tombstones both entries
    last = publisher.committed[-1]
    assert last.commit_offset == 13
    assert {(m.key, m.value) for m in last.messages if m.topic == "state"} == {
        (ledger_key("requests", 0, 11).encode(), None),
        (ledger_key("requests", 0, 12).encode(), None),
    }
    assert subject.watermark == 13 and subject.idle


async def test_requests_on_one_volume_never_overlap_and_run_in_offset_order() -> None:
    handler, publisher = Handler(), FakePublisher()
    subject = lane(handler, publisher)
    subject.offer([Record(0, request("a-1")), Record(1, request("a-2")), Record(2, request("b"))])
    await settle()
    assert handler.running == {"a", "b"}
    for name in ("b", "a-2", "a-1"):  # a-2 is released first but must wait for a-1
        handler.gate(name).set()
    await settle()
    assert handler.overlaps == []
    assert publisher.results() == ["req-b", "req-a-1", "req-a-2"]
    assert publisher.offsets()[-1] == 3


async def test_a_redelivery_after_a_crash_skips_the_ledgered_record() -> None:
    ledger = Ledger()
    ledger.apply(ledger_key("requests", 0, 1), b"1")  # answered before the crash, offset still 0
    handler, publisher = Handler(), FakePublisher()
    subject = lane(handler, publisher, start=0, ledger=ledger)
    for name in ("a", "b"):
        handler.gate(name).set()
    subject.offer([Record(0, request("a")), Record(1, request("b"))])
    await settle()
    assert publisher.results() == ["req-a"], "the ledgered record was answered again"
    assert publisher.offsets()[-1] == 2
    assert ledger.entries("requests", 0) == []  # tombstoned once passed


async def test_a_failed_commit_breaks_the_lane_and_applies_nothing() -> None:
    handler, publisher = Handler(record_intent=False), FakePublisher(fail_at={1})
    subject = lane(handler, publisher, start=5, max_in_flight=1)
    handler.gate("a").set()
    handler.gate("b").set()
    subject.offer([Record(5, request("a")), Record(6, request("b"))])
    await settle()
    assert subject.broken is not None and subject.broken.offset == 5
    assert subject.watermark == 5, "the watermark moved although nothing was committed"
    assert publisher.committed == []
    assert handler.running == set(), "the lane kept starting work after it broke"


async def test_an_intent_that_cannot_be_recorded_breaks_the_lane_and_fails_the_step() -> None:
    handler, publisher = Handler(record_intent=True), FakePublisher(fail_at={1})
    subject = lane(handler, publisher)
    handler.gate("a").set()
    subject.offer([Record(0, request("a"))])
    await settle()
    assert subject.broken is not None
    assert publisher.committed == [], "a dead letter was committed on a broken lane"


async def test_bad_records_become_dead_letters_and_the_partition_goes_on() -> None:
    handler, publisher = Handler(), FakePublisher()
    subject = lane(handler, publisher)
    handler.gate("ok").set()
    subject.offer(
        [
            Record(0, b"{not json"),
            Record(1, b"[" * 100_000),
            Record(2, request("ok"), key=b"other"),
            Record(3, None),
            Record(4, request("ok")),
        ]
    )
    await settle()
    reasons = publisher.dead_letters()
    assert [offset for _, offset in reasons] == [0, 1, 2, 3]
    assert reasons[2][0] == "KeyMismatch" and reasons[3][0] == "EmptyEvent"
    assert publisher.results() == ["req-ok"] and publisher.offsets()[-1] == 5


async def test_a_handler_that_crashes_parks_its_request() -> None:
    handler, publisher = Handler(), FakePublisher()
    handler.crash.add("a")
    subject = lane(handler, publisher)
    for name in ("a", "b"):
        handler.gate(name).set()
    subject.offer([Record(0, request("a")), Record(1, request("b"))])
    await settle()
    assert publisher.dead_letters() == [("HandlerCrashed", 0)]
    assert publisher.results() == ["req-b"] and subject.watermark == 2


async def test_a_poisoned_offset_is_dead_lettered_instead_of_handled() -> None:
    handler, publisher = Handler(), FakePublisher()
    subject = lane(handler, publisher, start=3, poison=3)
    subject.offer([Record(3, request("a"))])
    await settle()
    assert publisher.dead_letters() == [("CommitFailed", 3)] and handler.running == set()
    assert subject.watermark == 4


async def test_backpressure_and_drain() -> None:
    handler, publisher = Handler(), FakePublisher()
    subject = lane(handler, publisher, max_in_flight=2)
    subject.offer([Record(0, request("a")), Record(1, request("b"))])
    await settle()
    assert subject.full
    await subject.drain(0)
    assert subject.idle and publisher.committed == [], "a cancelled request was committed"
