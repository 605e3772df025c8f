"""The request loop: consume requests and feed each partition's lane (see ``lane``).

* Nothing blocks a partition: undecodable or invalid events are dead-lettered by the lane, and a
  full lane pauses its partition instead of stopping the poll loop.
* Rebalance: revocation drains the partition's lane (in-flight work finishes within the grace
  period) and closes its producer; assignment first catches the state up from the state topic,
  then starts a producer (fencing any zombie with the same transactional id) and a lane.
* A lane that cannot commit is dropped and its partition re-read from the last committed offset;
  records that were answered meanwhile are skipped through the ledger.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from provisioner import metrics
from provisioner.bus.lane import Handler, Lane, ResourceOf
from provisioner.bus.publisher import PartitionPublisher
from provisioner.bus.state_topic import StateTopicReader
from provisioner.errors import TemporaryError
from provisioner.settings import KafkaSettings
from provisioner.state import DesiredState

log = logging.getLogger(__name__)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: RequestLoop) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._loop.revoke(set(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._loop.assign(set(assigned))


class RequestLoop:
    def __init__(
        self,
        settings: KafkaSettings,
        state: DesiredState,
        reader: StateTopicReader,
        handler: Handler,
        resource_of: ResourceOf,
        *,
        max_in_flight: int,
        grace: float,
        on_assigned: Callable[[], None] | None = None,
    ) -> None:
        self._settings = settings
        self._on_assigned = on_assigned
        self._state = state
        self._reader = reader
        self._handler = handler
        self._resource_of = resource_of
        self._max_in_flight = max_in_flight
        self._grace = grace
        self._publishers: dict[TopicPartition, PartitionPublisher] = {}
        self._lanes: dict[TopicPartition, Lane] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self.ready = False

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.bootstrap,
            group_id=self._settings.group_id,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            max_poll_records=self._max_in_flight,
            session_timeout_ms=int(self._settings.session_timeout * 1000),
            heartbeat_interval_ms=max(100, int(self._settings.session_timeout * 1000 / 4)),
            request_timeout_ms=int(self._settings.request_timeout * 1000),
        )
        consumer.subscribe([self._settings.requests_topic], listener=_Listener(self))
        try:
            await consumer.start()
        except KafkaError as e:
            await consumer.stop()
            raise TemporaryError(f"cannot join consumer group {self._settings.group_id}: {e}") from e
        self._consumer = consumer
        self.ready = True
        metrics.READY.set(1)
        try:
            while not stop.is_set():
                try:
                    batches = await consumer.getmany(timeout_ms=200)
                except KafkaError as e:
                    log.warning("fetching requests failed, retrying: %s", e)
                    await asyncio.sleep(1.0)
                    continue
                if batches:
                    log.debug("fetched %s", {tp.partition: len(r) for tp, r in batches.items()})
                for tp, records in batches.items():
                    lane = self._lanes.get(tp)
                    if lane is not None:
                        lane.offer(records)
                    elif tp in consumer.assignment():
                        # fetched while the assignment is still being prepared: read them again later
                        consumer.seek(tp, records[0].offset)
                await self._tend(consumer)
        finally:
            self.ready = False
            metrics.READY.set(0)
            await self._drop(set(self._lanes))
            await consumer.stop()
            self._consumer = None

    async def _tend(self, consumer: AIOKafkaConsumer) -> None:
        """Backpressure and repair: pause full lanes, resume the others, restart broken ones."""
        for tp, lane in list(self._lanes.items()):
            if lane.lost:
                await self._drop({tp})
                continue
            if lane.broken is not None:
                watermark = lane.broken.watermark
                await lane.drain(0)
                self._lanes[tp] = self._new_lane(tp)
                consumer.seek(tp, watermark)
                continue
            if lane.full:
                consumer.pause(tp)
            else:
                consumer.resume(tp)

    # --- rebalance ------------------------------------------------------------------------------

    async def revoke(self, revoked: set[TopicPartition]) -> None:
        await self._drop(revoked)

    async def assign(self, assigned: set[TopicPartition]) -> None:
        applied = await self._reader.catch_up()
        log.info("assigned %s; state caught up (%d records)", sorted(tp.partition for tp in assigned), applied)
        for tp in assigned:
            if tp not in self._publishers:
                publisher = PartitionPublisher(self._settings, tp)
                await publisher.start()
                self._publishers[tp] = publisher
            if tp not in self._lanes:
                self._lanes[tp] = self._new_lane(tp)
        if self._on_assigned is not None:
            self._on_assigned()

    def _new_lane(self, tp: TopicPartition) -> Lane:
        return Lane(
            tp,
            self._publishers[tp],
            state=self._state,
            ledger=self._reader.ledger,
            handler=self._handler,
            resource_of=self._resource_of,
            dlq_topic=self._settings.dlq_topic,
            results_topic=self._settings.results_topic,
            max_in_flight=self._max_in_flight,
        )

    async def _drop(self, partitions: set[TopicPartition]) -> None:
        lanes = [lane for tp in partitions if (lane := self._lanes.pop(tp, None)) is not None]
        await asyncio.gather(*(lane.drain(self._grace) for lane in lanes))
        for tp in partitions:
            publisher = self._publishers.pop(tp, None)
            if publisher is not None:
                await publisher.stop()

    # --- observability (read by the readiness checks) ---------------------------------------------

    async def broker_lag(self) -> dict[int, int]:
        """A real round trip to the brokers, then the lag of each assigned partition: records up to
        the last stable offset that are not committed yet (in-flight and queued work included).

        aiokafka retries silently while the broker is gone, so readiness needs this request to
        notice. Raises TemporaryError when Kafka does not answer; the caller bounds the time.
        """
        consumer = self._consumer
        if consumer is None or not self.ready:
            raise TemporaryError("not in the consumer group yet")
        try:
            await consumer.topics()  # a metadata request, answered even with no partition assigned
            assigned = sorted(consumer.assignment(), key=lambda tp: tp.partition)
            ends = await consumer.end_offsets(assigned) if assigned else {}
            lag: dict[int, int] = {}
            for tp in assigned:
                committed = await consumer.committed(tp)
                if committed is None:
                    committed = (await consumer.beginning_offsets([tp]))[tp]
                lag[tp.partition] = max(ends[tp] - committed, 0)
        except KafkaError as e:
            raise TemporaryError(f"Kafka at {self._settings.bootstrap} does not answer: {e!r}") from e
        return lag
