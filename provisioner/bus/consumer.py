"""The request loop: consume requests and feed each partition's lane (``bus.lane``).

* Nothing blocks a partition: every record becomes a result or a dead letter in its lane, and a
  full lane pauses its partition instead of stopping the poll loop.
* Rebalance: revocation drains the partition's lane (in-flight work finishes within the grace
  period) and closes its producer. Assignment only pauses the partition; the poll loop then sets
  it up, in this order: a producer with the partition's transactional id (which fences a zombie
  daemon and aborts what it left open), the state caught up from the state topic (including
  whatever the zombie committed first), the committed offset read from the broker, a lane from
  there. A set-up that fails is retried at the next turn of the loop (aiokafka would swallow an
  exception raised inside its rebalance callback and leave the partition idle).
* A lane that breaks (a failed or uncertain commit) or whose producer was fenced is discarded with
  its producer, and its partition set up again the same way; an offset that breaks its lane three
  times in a row is dead-lettered by the next lane instead of handled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from provisioner import metrics
from provisioner.bus.lane import Handler, KeysOf, Lane
from provisioner.bus.publisher import PartitionPublisher
from provisioner.bus.records import Records, Topics
from provisioner.bus.state_topic import StateTopicReader
from provisioner.errors import KafkaUnavailable, ProvisionerError
from provisioner.settings import KafkaSettings

log = logging.getLogger(__name__)
POISON_AFTER = 3
"""Breaks of one lane at one offset, in a row, after which that record is dead-lettered."""
PARTITIONER = DefaultPartitioner()
"""The producers' own choice of partition for a key, so ``owns`` agrees with where requests land."""
SETUP_RETRY = 2.0
"""Seconds before a partition whose set-up failed is tried again."""


def consumer_options(settings: KafkaSettings, *, grace: float, batch: int) -> dict[str, Any]:
    """The request consumer's settings. Offsets move only inside our transactions, records of aborted
    transactions are never seen, and the group waits for a member's revoke drain (the grace period,
    then its last commit) instead of evicting it mid-commit and handing its partition to another."""
    return {
        "bootstrap_servers": settings.bootstrap,
        "group_id": settings.group_id,
        "enable_auto_commit": False,
        "isolation_level": "read_committed",
        "auto_offset_reset": "earliest",
        "max_poll_records": batch,
        "session_timeout_ms": int(settings.session_timeout * 1000),
        "heartbeat_interval_ms": max(100, int(settings.session_timeout * 1000 / 4)),
        "rebalance_timeout_ms": int((grace + settings.request_timeout) * 1000),
        "request_timeout_ms": int(settings.request_timeout * 1000),
    }


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: RequestLoop) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._loop.revoke(set(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._loop.assigned(set(assigned))


class RequestLoop:
    def __init__(
        self,
        settings: KafkaSettings,
        reader: StateTopicReader,
        handler: Handler,
        keys_of: KeysOf,
        *,
        max_in_flight: int,
        grace: float,
        on_assigned: Callable[[], None] | None = None,
        passed: Callable[[str], None] | None = None,
    ) -> None:
        """``passed``: handed to every partition's publisher (crash injection at transaction phases)."""
        self._settings = settings
        self._on_assigned = on_assigned
        self._passed = passed
        self._reader = reader
        self._handler = handler
        self._keys_of = keys_of
        self._max_in_flight = max_in_flight
        self._grace = grace
        self._records = Records(
            Topics(results=settings.results_topic, state=settings.state_topic, dlq=settings.dlq_topic)
        )
        self._publishers: dict[TopicPartition, PartitionPublisher] = {}
        self._lanes: dict[TopicPartition, Lane] = {}
        self._unready: dict[TopicPartition, float] = {}  # assigned, not set up yet: when to try next
        self._breaks: dict[TopicPartition, tuple[int, int]] = {}  # (offset, times in a row)
        self._consumer: AIOKafkaConsumer | None = None
        self.ready = False

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(**consumer_options(self._settings, grace=self._grace, batch=self._max_in_flight))
        consumer.subscribe([self._settings.requests_topic], listener=_Listener(self))
        try:
            await consumer.start()
        except KafkaError as e:
            await consumer.stop()
            raise KafkaUnavailable(f"cannot join consumer group {self._settings.group_id}: {e}") from e
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
                for tp, records in batches.items():
                    lane = self._lanes.get(tp)
                    if lane is not None:
                        lane.offer(records)
                    # else: fetched while its set-up is pending; the set-up seeks to the committed offset
                await self._tend(consumer)
        finally:
            self.ready = False
            metrics.READY.set(0)
            await self._drop(set(self._lanes), grace=self._grace)
            await consumer.stop()
            self._consumer = None

    async def _tend(self, consumer: AIOKafkaConsumer) -> None:
        """Rebuild broken lanes, set up assigned partitions, and apply backpressure."""
        for tp, lane in list(self._lanes.items()):
            if lane.broken is not None or lane.lost:
                self._count_break(tp, lane)
                await self._drop({tp}, grace=0)
                consumer.pause(tp)
                self._unready[tp] = time.monotonic() + (SETUP_RETRY if lane.lost else 0)
        now = time.monotonic()
        for tp, when in list(self._unready.items()):
            if when <= now and tp in consumer.assignment():
                await self._set_up(consumer, tp)
            elif tp not in consumer.assignment():
                self._unready.pop(tp, None)  # revoked meanwhile (a rebalance can run during a set-up)
        for tp, lane in self._lanes.items():
            if lane.full:
                consumer.pause(tp)
            else:
                consumer.resume(tp)

    def _count_break(self, tp: TopicPartition, lane: Lane) -> None:
        if lane.broken is None or lane.broken.offset < 0:
            return
        offset, times = self._breaks.get(tp, (-1, 0))
        self._breaks[tp] = (lane.broken.offset, times + 1 if offset == lane.broken.offset else 1)

    async def _set_up(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> None:
        publisher = PartitionPublisher(self._settings, tp, passed=self._passed)
        try:
            await publisher.start()  # first: fences a zombie before we read what it wrote
            applied = await self._reader.catch_up()
            committed = await consumer.committed(tp)
            if committed is None:
                committed = (await consumer.beginning_offsets([tp]))[tp]
        except (ProvisionerError, KafkaError) as e:
            log.warning("partition %s not set up yet (%s); trying again in %.0fs", tp, e, SETUP_RETRY)
            await publisher.stop()
            self._unready[tp] = time.monotonic() + SETUP_RETRY
            return
        offset, times = self._breaks.get(tp, (-1, 0))
        poison = offset if times >= POISON_AFTER else None
        if poison is not None:
            log.error("%s: offset %d broke its lane %d times; it goes to the dead-letter topic", tp, poison, times)
            del self._breaks[tp]
        self._publishers[tp] = publisher
        self._lanes[tp] = Lane(
            tp,
            publisher,
            ledger=self._reader.ledger,
            applied=self._reader.applied,
            handler=self._handler,
            keys_of=self._keys_of,
            records=self._records,
            max_in_flight=self._max_in_flight,
            start=committed,
            poison=poison,
        )
        self._unready.pop(tp, None)
        if tp not in consumer.assignment():  # revoked while it was being set up
            await self._drop({tp}, grace=0)
            return
        consumer.seek(tp, committed)
        consumer.resume(tp)
        log.info("partition %s ready at offset %d (state caught up, %d records)", tp, committed, applied)
        if self._on_assigned is not None:
            self._on_assigned()

    def owns(self, cluster: str) -> bool:
        """Whether this daemon now holds the request partition of ``cluster`` (requests are keyed by
        cluster, with the default partitioner), with a lane that is up."""
        consumer = self._consumer
        topic = self._settings.requests_topic
        partitions = sorted(consumer.partitions_for_topic(topic) or ()) if consumer is not None else []
        if not partitions:
            return False
        lane = self._lanes.get(TopicPartition(topic, PARTITIONER(cluster.encode(), partitions, partitions)))
        return lane is not None and lane.broken is None and not lane.lost

    # --- rebalance ------------------------------------------------------------------------------

    def assigned(self, partitions: set[TopicPartition]) -> None:
        """Called inside the rebalance: only mark the partitions; ``_tend`` sets them up."""
        consumer = self._consumer
        for tp in partitions:
            if tp not in self._lanes:
                self._unready[tp] = 0.0
                if consumer is not None:
                    consumer.pause(tp)

    async def revoke(self, revoked: set[TopicPartition]) -> None:
        for tp in revoked:
            self._unready.pop(tp, None)
            self._breaks.pop(tp, None)
        await self._drop(revoked, grace=self._grace)

    async def _drop(self, partitions: set[TopicPartition], *, grace: float) -> None:
        lanes = [lane for tp in partitions if (lane := self._lanes.pop(tp, None)) is not None]
        await asyncio.gather(*(lane.drain(grace) for lane in lanes))
        for tp in partitions:
            publisher = self._publishers.pop(tp, None)
            if publisher is not None:
                await publisher.stop()

    # --- observability (read by the readiness checks) ---------------------------------------------

    async def broker_lag(self) -> dict[int, int]:
        """A real round trip to the brokers, then the lag of each assigned partition: records up to
        the last stable offset that are not committed yet (in-flight and queued work included).

        aiokafka retries silently while the broker is gone, so readiness needs this request to
        notice. Raises KafkaUnavailable when Kafka does not answer; the caller bounds the time.
        """
        consumer = self._consumer
        if consumer is None or not self.ready:
            raise KafkaUnavailable("not in the consumer group yet")
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
            raise KafkaUnavailable(f"Kafka at {self._settings.bootstrap} does not answer: {e!r}") from e
        return lag
