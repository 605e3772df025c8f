"""Reads the compacted state topic into ``DesiredState``, from the start and then incrementally.

``catch_up`` reads every partition up to its current last stable offset (``read_committed``), so
state written by an aborted transaction is never seen. A record we cannot decode is logged and
skipped rather than stopping the daemon: the reconciler reports what it could not read.

The daemon's own lanes apply what they commit at once (``applied``), ahead of this reader. A later
``catch_up`` (a partition set up, a reconcile pass) then meets those records, and older ones of
the same keys, after the fact; it skips every record of a key up to the one a lane applied, so
memory never steps back to an older version of a volume while requests run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from provisioner.bus.publisher import Position
from provisioner.bus.topics import topic_partitions
from provisioner.delivery.ledger import Ledger
from provisioner.errors import KafkaUnavailable
from provisioner.settings import KafkaSettings
from provisioner.state import DesiredState, StateChange, UnknownRecord

log = logging.getLogger(__name__)


class StateTopicReader:
    def __init__(
        self, settings: KafkaSettings, state: DesiredState, ledger: Ledger | None = None, *, keep_times: bool = False
    ) -> None:
        """``keep_times``: remember each key's last record time (ms), for ``reconcile`` to tell stale
        records; the daemon does not need it and keeps the memory."""
        self._settings = settings
        self.times: dict[str, int] | None = {} if keep_times else None
        self._state = state
        self.ledger = ledger if ledger is not None else Ledger()
        self._consumer: AIOKafkaConsumer | None = None
        self._ahead: dict[str, Position] = {}  # key -> the record of it a lane applied before we read it
        self._reading = asyncio.Lock()  # one catch_up at a time on the one consumer

    @property
    def started(self) -> bool:
        return self._consumer is not None

    async def start(self) -> None:
        partitions = await topic_partitions(self._settings, self._settings.state_topic)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            request_timeout_ms=int(self._settings.request_timeout * 1000),
        )
        try:
            await consumer.start()
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
        except KafkaError as e:
            await consumer.stop()
            raise KafkaUnavailable(f"cannot read state topic {self._settings.state_topic}: {e}") from e
        self._consumer = consumer

    async def catch_up(self) -> int:
        """Apply every committed record up to now; returns how many were applied."""
        consumer = self._consumer
        assert consumer is not None, "start() first"
        applied = 0
        async with self._reading:
            try:
                partitions = list(consumer.assignment())
                ends = await consumer.end_offsets(partitions)
                pending = {tp for tp in partitions if await consumer.position(tp) < ends[tp]}
                while pending:
                    batches = await consumer.getmany(*pending, timeout_ms=500, max_records=10_000)
                    for tp, records in batches.items():
                        for record in records:
                            applied += self._read(record.key, record.value, (tp.partition, record.offset))
                            if self.times is not None and record.key is not None:
                                self.times[record.key.decode(errors="replace")] = record.timestamp
                    pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
                await self._forget_passed(consumer, partitions)
            except KafkaError as e:
                raise KafkaUnavailable(f"reading state topic: {e}") from e
        return applied

    def applied(self, changes: Sequence[StateChange], positions: Sequence[Position]) -> None:
        """Apply ``changes`` that a lane of this daemon has just committed at ``positions``."""
        for change, position in zip(changes, positions, strict=True):
            self._apply(change.key, change.value)
            self._ahead[change.key] = position

    def _read(self, key: bytes | None, value: bytes | None, position: Position) -> int:
        if key is None:
            log.warning("state record without a key skipped")
            return 0
        try:
            text = key.decode()
        except UnicodeDecodeError as e:
            log.warning("state record %r skipped: %s", key[:80], e)
            return 0
        ahead = self._ahead.get(text)
        if ahead is not None and ahead[0] == position[0] and position[1] <= ahead[1]:
            if position == ahead:
                del self._ahead[text]  # caught up with the lane on this key
            return 0  # memory already holds this record or a newer one of the key
        return self._apply(text, value)

    def _apply(self, key: str, value: bytes | None) -> int:
        try:
            if not self.ledger.apply(key, value):
                self._state.apply(StateChange(key, value))
        except (UnknownRecord, ValidationError, ValueError) as e:
            log.warning("state record %r skipped: %s", key[:80], e)
            return 0
        return 1

    async def _forget_passed(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
        """Drop the marks of records this reader has read past (compacted away, or read before the mark)."""
        if not self._ahead:
            return
        positions = {tp.partition: await consumer.position(tp) for tp in partitions}
        self._ahead = {
            key: (partition, offset)
            for key, (partition, offset) in self._ahead.items()
            if offset >= positions.get(partition, offset)
        }

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
