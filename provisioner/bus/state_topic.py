"""Reads the compacted state topic into ``DesiredState``, from the start and then incrementally.

``catch_up`` reads every partition up to its current last stable offset (``read_committed``), so
state written by an aborted transaction is never seen. A record we cannot decode is logged and
skipped rather than stopping the daemon: the reconciler reports what it could not read.
"""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from pydantic import ValidationError

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
        try:
            partitions = list(consumer.assignment())
            ends = await consumer.end_offsets(partitions)
            pending = {tp for tp in partitions if await consumer.position(tp) < ends[tp]}
            while pending:
                batches = await consumer.getmany(*pending, timeout_ms=500, max_records=10_000)
                for records in batches.values():
                    for record in records:
                        applied += self._apply(record.key, record.value)
                        if self.times is not None and record.key is not None:
                            self.times[record.key.decode(errors="replace")] = record.timestamp
                pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
        except KafkaError as e:
            raise KafkaUnavailable(f"reading state topic: {e}") from e
        return applied

    def _apply(self, key: bytes | None, value: bytes | None) -> int:
        if key is None:
            log.warning("state record without a key skipped")
            return 0
        try:
            text = key.decode()
            if not self.ledger.apply(text, value):
                self._state.apply(StateChange(text, value))
        except (UnknownRecord, ValidationError, UnicodeDecodeError, ValueError) as e:
            log.warning("state record %r skipped: %s", key[:80], e)
            return 0
        return 1

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
