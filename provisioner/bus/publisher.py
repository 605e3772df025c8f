"""One transactional producer per input partition: the exactly-once half of the daemon.

A request's result event, its state records and the input offset are committed in one Kafka
transaction, so after any crash either all three are visible (``read_committed``) or none is and
the request is redelivered. The transactional id names the input partition, so when a partition
moves to another daemon, that daemon's producer fences ours: a zombie cannot commit twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced
from aiokafka.structs import OffsetAndMetadata

from provisioner.errors import TemporaryError
from provisioner.events.envelope import Headers
from provisioner.settings import KafkaSettings
from provisioner.state import StateChange

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers


class PartitionLost(Exception):
    """Another daemon owns this input partition now; stop working on it."""


def idempotent_producer(settings: KafkaSettings, *, transactional_id: str | None = None) -> AIOKafkaProducer:
    """Every producer of ours: idempotent, acks from all in-sync replicas, the settings' timeout."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap,
        transactional_id=transactional_id,
        enable_idempotence=True,
        acks="all",
        request_timeout_ms=int(settings.request_timeout * 1000),
    )


class PartitionPublisher:
    def __init__(self, settings: KafkaSettings, partition: TopicPartition) -> None:
        self._settings = settings
        self.partition = partition
        self._producer = idempotent_producer(
            settings, transactional_id=f"{settings.transactional_id_prefix}.{partition.topic}.{partition.partition}"
        )

    async def start(self) -> None:
        try:
            await self._producer.start()
        except KafkaError as e:
            await self._producer.stop()
            raise TemporaryError(f"cannot start the transactional producer for {self.partition}: {e}") from e

    def state_records(self, changes: list[StateChange]) -> list[Outgoing]:
        return [Outgoing(self._settings.state_topic, c.key.encode(), c.value, []) for c in changes]

    async def publish(self, messages: list[Outgoing], *, commit_offset: int | None = None) -> None:
        """Send ``messages`` (and commit the input up to ``commit_offset``) atomically."""
        try:
            async with self._producer.transaction():
                for message in messages:
                    await self._producer.send(
                        message.topic, value=message.value, key=message.key, headers=message.headers
                    )
                if commit_offset is not None:
                    await self._producer.send_offsets_to_transaction(
                        {self.partition: OffsetAndMetadata(commit_offset, "")}, self._settings.group_id
                    )
        except ProducerFenced as e:
            raise PartitionLost(f"{self.partition} was taken over by another daemon") from e
        except KafkaError as e:
            raise TemporaryError(f"transaction for {self.partition} failed: {e}", delay=1.0) from e

    async def stop(self) -> None:
        try:
            await self._producer.stop()
        except KafkaError as e:
            log.warning("closing producer of %s: %s", self.partition, e)
