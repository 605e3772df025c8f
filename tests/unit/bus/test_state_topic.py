"""The state reader never sets memory back: a record a lane already applied, or an older one of its key,
is skipped when a later catch-up meets it, while newer records and other keys apply as usual."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from provisioner.bus.state_topic import StateTopicReader
from provisioner.delivery.ledger import Ledger
from provisioner.domain import ClusterId, Distribute, Volume, VolumeId, VolumeStatus
from provisioner.settings import KafkaSettings
from provisioner.state import DesiredState, StateChange

TP = TopicPartition("state", 0)


@dataclass
class Message:
    key: bytes
    value: bytes | None
    offset: int
    timestamp: int = 0


@dataclass
class FakeConsumer:
    """The part of AIOKafkaConsumer the reader uses, over one partition held in memory."""

    log: list[Message] = field(default_factory=list)
    at: int = 0
    visible: int | None = None  # the end offset the broker reports, when it lags the log

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {TP: len(self.log) if self.visible is None else self.visible}

    async def position(self, tp: TopicPartition) -> int:
        return self.at

    async def getmany(self, *partitions: TopicPartition, **_: Any) -> dict[TopicPartition, list[Message]]:
        batch, self.at = self.log[self.at : self.at + 2], min(self.at + 2, len(self.log))
        return {TP: batch}

    def append(self, change: StateChange) -> int:
        self.log.append(Message(change.key.encode(), change.value, len(self.log)))
        return len(self.log) - 1


def volume(status: VolumeStatus, name: str = "v") -> Volume:
    return Volume(
        id=VolumeId("a" * 32),
        name=name,
        cluster=ClusterId("dev"),
        size=1,
        durability=Distribute(),
        bricks=(),
        status=status,
    )


def reader_over(consumer: FakeConsumer) -> tuple[StateTopicReader, DesiredState]:
    state = DesiredState()
    reader = StateTopicReader(KafkaSettings(), state, Ledger())
    reader._consumer = consumer  # started, on the fake
    return reader, state


async def test_a_catch_up_behind_a_lane_does_not_set_a_volume_back() -> None:
    consumer = FakeConsumer()
    reader, state = reader_over(consumer)
    creating = StateChange.put_volume(volume(VolumeStatus.CREATING))
    online = StateChange.put_volume(volume(VolumeStatus.ONLINE))
    reader.applied([creating], [(0, consumer.append(creating))])
    reader.applied([online], [(0, consumer.append(online))])  # the lane is two records ahead of the reader

    consumer.visible = 1  # the end offsets were read just before the second record
    assert await reader.catch_up() == 0
    assert state.volumes[VolumeId("a" * 32)].status is VolumeStatus.ONLINE, "not set back to creating"
    consumer.visible = None
    assert await reader.catch_up() == 0
    assert state.volumes[VolumeId("a" * 32)].status is VolumeStatus.ONLINE

    deleting = StateChange.put_volume(volume(VolumeStatus.DELETING))
    consumer.append(deleting)  # a newer record of the key, which this daemon did not apply: it counts
    assert await reader.catch_up() == 1
    assert state.volumes[VolumeId("a" * 32)].status is VolumeStatus.DELETING


async def test_marks_of_records_read_earlier_are_forgotten() -> None:
    consumer = FakeConsumer()
    reader, state = reader_over(consumer)
    online = StateChange.put_volume(volume(VolumeStatus.ONLINE))
    offset = consumer.append(online)
    assert await reader.catch_up() == 1  # read before the lane says it applied it
    reader.applied([online], [(0, offset)])
    assert await reader.catch_up() == 0
    assert reader._ahead == {}, "a mark the reader has passed is dropped"
    consumer.append(StateChange.delete_volume(VolumeId("a" * 32)))
    assert await reader.catch_up() == 1
    assert state.volumes == {}
