"""The request loop: consume requests, hand each to the handler, commit its outcome transactionally.

* One lane per input partition; records of a partition are handled in order (a cluster's requests
  are ordered by key), partitions run concurrently.
* Nothing blocks a partition: an event that cannot be decoded or validated, or whose key does not
  name its cluster, goes to the dead-letter topic with the original bytes, headers and the reason,
  and its offset is committed in the same transaction.
* Rebalance: revocation waits for in-flight work of the current batch, then closes the partition's
  producer; assignment first catches the state up from the state topic, then takes requests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from provisioner import metrics
from provisioner.bus.publisher import Outgoing, PartitionLost, PartitionPublisher
from provisioner.bus.state_topic import StateTopicReader
from provisioner.errors import InvalidEvent, TemporaryError
from provisioner.events.envelope import Event, decode_request
from provisioner.events.models import REQUEST_KINDS
from provisioner.settings import KafkaSettings
from provisioner.state import DesiredState, StateChange

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Completion:
    """What a handled request produces: messages for other topics and state changes."""

    messages: list[Outgoing]
    changes: list[StateChange] = field(default_factory=list)


class Intent:
    """Publishes state changes before node work (see ``worker.IntentWriter``)."""

    def __init__(self, publisher: PartitionPublisher, state: DesiredState) -> None:
        self._publisher = publisher
        self._state = state

    async def record(self, changes: list[StateChange]) -> None:
        await self._publisher.publish(self._publisher.state_records(changes))
        for change in changes:
            self._state.apply(change)


Handler = Callable[[Event, Intent], Awaitable[Completion]]


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
        *,
        publish_retries: int = 5,
    ) -> None:
        self._settings = settings
        self._state = state
        self._reader = reader
        self._handler = handler
        self._publish_retries = publish_retries
        self._publishers: dict[TopicPartition, PartitionPublisher] = {}
        self._gate = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self.ready = False

    async def run(self, stop: asyncio.Event, *, grace: float) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.bootstrap,
            group_id=self._settings.group_id,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            max_poll_records=20,
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
                    batches = await consumer.getmany(timeout_ms=500)
                except KafkaError as e:
                    log.warning("fetching requests failed, retrying: %s", e)
                    await asyncio.sleep(1.0)
                    continue
                if not batches:
                    continue
                async with self._gate:
                    work = asyncio.gather(*(self._lane(tp, records) for tp, records in batches.items()))
                    await _finish_or_abandon(work, stop, grace=grace)
        finally:
            self.ready = False
            metrics.READY.set(0)
            await self._close_publishers(set(self._publishers))
            await consumer.stop()
            self._consumer = None

    # --- rebalance ------------------------------------------------------------------------------

    async def revoke(self, revoked: set[TopicPartition]) -> None:
        async with self._gate:  # in-flight work of the current batch finishes first
            await self._close_publishers(revoked)

    async def assign(self, assigned: set[TopicPartition]) -> None:
        async with self._gate:
            applied = await self._reader.catch_up()
            log.info("assigned %s; state caught up (%d records)", sorted(tp.partition for tp in assigned), applied)
            for tp in assigned:
                if tp not in self._publishers:
                    publisher = PartitionPublisher(self._settings, tp)
                    await publisher.start()
                    self._publishers[tp] = publisher

    async def _close_publishers(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            publisher = self._publishers.pop(tp, None)
            if publisher is not None:
                await publisher.stop()

    # --- one partition --------------------------------------------------------------------------

    async def _lane(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        for record in records:
            publisher = self._publishers.get(tp)
            if publisher is None:
                return  # revoked meanwhile; the new owner redelivers from the committed offset
            try:
                await self._process(publisher, record)
            except PartitionLost as e:
                log.warning("%s", e)
                await self._close_publishers({tp})
                return
            except TemporaryError as e:
                log.error("could not commit offset %d of %s (%s); it will be redelivered", record.offset, tp, e)
                if self._consumer is not None:
                    self._consumer.seek(tp, record.offset)
                return

    async def _process(self, publisher: PartitionPublisher, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            event = decode_request(record.value)
            _check_key(event, record.key)
        except InvalidEvent as e:
            await self._commit(publisher, record, [self._dead_letter(record, e.reason, str(e))], [])
            return
        metrics.REQUESTS_RECEIVED.labels(REQUEST_KINDS.get(event.type, "unknown")).inc()
        metrics.IN_FLIGHT.inc()
        try:
            completion = await self._handler(event, Intent(publisher, self._state))
        except (PartitionLost, asyncio.CancelledError):
            raise
        except Exception as e:  # a bug must not block the partition: park the request with the reason
            log.exception("handler crashed on %s offset %d", record.topic, record.offset)
            completion = Completion([self._dead_letter(record, "HandlerCrashed", f"{type(e).__name__}: {e}")])
        finally:
            metrics.IN_FLIGHT.dec()
        await self._commit(publisher, record, completion.messages, completion.changes)

    async def _commit(
        self,
        publisher: PartitionPublisher,
        record: ConsumerRecord[bytes, bytes],
        messages: list[Outgoing],
        changes: list[StateChange],
    ) -> None:
        outgoing = messages + publisher.state_records(changes)
        delay = 0.5
        for attempt in range(self._publish_retries + 1):
            try:
                await publisher.publish(outgoing, commit_offset=record.offset + 1)
                break
            except TemporaryError:
                if attempt == self._publish_retries:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        for change in changes:
            self._state.apply(change)

    def _dead_letter(self, record: ConsumerRecord[bytes, bytes], reason: str, message: str) -> Outgoing:
        log.warning(
            "dead letter from %s/%d@%d: %s: %s",
            record.topic,
            record.partition,
            record.offset,
            reason,
            message,
        )
        metrics.DEAD_LETTERS.labels(reason).inc()
        headers = [
            *list(record.headers or ()),
            ("dlq_reason", reason.encode()),
            ("dlq_message", message[:4000].encode()),
            ("dlq_topic", record.topic.encode()),
            ("dlq_partition", str(record.partition).encode()),
            ("dlq_offset", str(record.offset).encode()),
        ]
        return Outgoing(self._settings.dlq_topic, record.key, record.value, headers)


def _check_key(event: Event, key: bytes | None) -> None:
    cluster = getattr(event.data, "cluster", None)
    if key is None or key.decode(errors="replace") != cluster:
        shown = key.decode(errors="replace") if key is not None else None
        raise InvalidEvent(
            f"message key {shown!r} does not match data.cluster {cluster!r}; requests are keyed by cluster id",
            reason="KeyMismatch",
        )


async def _finish_or_abandon(work: asyncio.Future[Any], stop: asyncio.Event, *, grace: float) -> None:
    """Let the batch finish; after a stop request it gets ``grace`` seconds, then is cancelled.

    A cancelled request was not committed, so it is redelivered and resumes from its recorded intent.
    """
    stopping: asyncio.Future[object] = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait([work, stopping], return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            work.result()
            return
        log.info("stopping: giving in-flight requests %.0fs to finish", grace)
        try:
            await asyncio.wait_for(asyncio.shield(work), grace)
        except TimeoutError:
            log.warning("in-flight requests abandoned at shutdown; they will be redelivered")
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
    finally:
        stopping.cancel()
