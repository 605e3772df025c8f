"""One transactional producer per input partition: the exactly-once half of the daemon.

A request's result event, its state records and the input offset are committed in one Kafka
transaction, so after any crash either all three are visible (``read_committed``) or none is and
the request is redelivered. The transactional id names the input partition, so when a partition
moves to another daemon, that daemon's producer fences ours: a zombie cannot commit twice.

Every send's delivery is awaited before the commit, so a record the broker refused fails the
transaction instead of vanishing from it. A transaction that fails leaves the producer in a state
aiokafka does not recover from by itself (an abortable error poisons every later transaction), so
the caller discards a publisher after any failure and starts a new one with the same id: its
``InitProducerId`` aborts whatever the old one left open on the broker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced
from aiokafka.structs import OffsetAndMetadata

from provisioner.bus.records import Outgoing
from provisioner.errors import KafkaUnavailable
from provisioner.settings import KafkaSettings

log = logging.getLogger(__name__)


Position = tuple[int, int]
"""Where the broker put a record: (partition, offset) in its topic."""


class PartitionLost(Exception):
    """Another producer with our transactional id fenced ours: stop committing on this partition."""


def idempotent_producer(settings: KafkaSettings, *, transactional_id: str | None = None) -> AIOKafkaProducer:
    """Every producer of ours: idempotent, acks from all in-sync replicas, the settings' timeout."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap,
        transactional_id=transactional_id,
        enable_idempotence=True,
        acks="all",
        request_timeout_ms=int(settings.request_timeout * 1000),
    )


def transactional_id(settings: KafkaSettings, partition: TopicPartition) -> str:
    return f"{settings.transactional_id_prefix}.{partition.topic}.{partition.partition}"


class PartitionPublisher:
    def __init__(
        self, settings: KafkaSettings, partition: TopicPartition, *, passed: Callable[[str], None] | None = None
    ) -> None:
        """``passed``: told each phase of every transaction (``transaction_sent``, ``transaction_committed``);
        crash-injection tests stop the process there (``executor.fault``)."""
        self._settings = settings
        self.partition = partition
        self._passed = passed or (lambda point: None)
        self._producer = idempotent_producer(settings, transactional_id=transactional_id(settings, partition))

    async def start(self) -> None:
        """Start the producer; this fences any older producer of the partition (a zombie daemon)."""
        try:
            await self._producer.start()
        except KafkaError as e:
            await self._producer.stop()
            raise KafkaUnavailable(f"cannot start the transactional producer for {self.partition}: {e}") from e

    async def publish(self, messages: Sequence[Outgoing], *, commit_offset: int | None = None) -> list[Position]:
        """Send ``messages`` (and commit the input up to ``commit_offset``) atomically; where each went."""
        try:
            async with self._producer.transaction():
                deliveries = [
                    await self._producer.send(m.topic, value=m.value, key=m.key, headers=list(m.headers))
                    for m in messages
                ]
                delivered = await asyncio.gather(*deliveries)
                self._passed("transaction_sent")
                if commit_offset is not None:
                    await self._producer.send_offsets_to_transaction(
                        {self.partition: OffsetAndMetadata(commit_offset, "")}, self._settings.group_id
                    )
            self._passed("transaction_committed")
            return [(d.partition, d.offset) for d in delivered]
        except ProducerFenced as e:
            raise PartitionLost(f"{self.partition} was taken over by another producer") from e
        except KafkaError as e:
            raise KafkaUnavailable(f"transaction for {self.partition} failed: {e!r}", delay=1.0) from e

    async def stop(self) -> None:
        try:
            await self._producer.stop()
        except KafkaError as e:
            log.warning("closing producer of %s: %s", self.partition, e)
