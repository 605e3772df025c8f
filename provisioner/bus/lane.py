"""One input partition's lane: dispatch in offset order, run different volumes concurrently,
commit outcomes transactionally and the offset only over the contiguous finished prefix.

* At most ``max_in_flight`` requests run at once; the consumer pauses the partition while the lane
  is full (backpressure without unbounded queues, and without starving the poll loop).
* Requests on one resource (volume) run one after another, in offset order; a request without a
  resource (a topology change) is a barrier: it waits for everything before it, and everything
  after it waits for it.
* Each finished record commits, in one transaction, its result/dead-letter messages, its state
  changes and the offset watermark. A record finishing above the watermark also writes a ledger
  entry so that a redelivery after a crash is skipped (see ``ledger``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from aiokafka import TopicPartition

from provisioner import metrics
from provisioner.bus.publisher import Outgoing, PartitionLost, PartitionPublisher
from provisioner.delivery.ledger import Ledger, ledger_key
from provisioner.errors import InvalidEvent, TemporaryError
from provisioner.events.envelope import Event, decode_request, encode
from provisioner.events.models import REQUEST_KINDS
from provisioner.state import DesiredState, StateChange

log = logging.getLogger(__name__)


class Record(Protocol):
    """The fields of an aiokafka ConsumerRecord the lane reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Completion:
    """What a handled request produces: messages for other topics and state changes."""

    messages: list[Outgoing]
    changes: list[StateChange] = field(default_factory=list)


class Intent:
    """Publishes state changes before node work (see ``worker.IntentWriter``)."""

    def __init__(self, lane: Lane) -> None:
        self._lane = lane

    async def record(self, changes: list[StateChange]) -> None:
        await self._lane.publish_state(changes)

    async def progress(self, event: Event, key: str) -> None:
        value, headers = encode(event)
        await self._lane.publish_messages([Outgoing(self._lane.results_topic, key.encode(), value, headers)])


Handler = Callable[[Event, Intent], Awaitable[Completion]]
ResourceOf = Callable[[Event], "str | None"]


class LaneBroken(Exception):
    """The lane could not commit; the partition must be re-read from ``watermark``."""

    def __init__(self, watermark: int) -> None:
        super().__init__(f"lane broken at offset {watermark}")
        self.watermark = watermark


class Lane:
    def __init__(
        self,
        partition: TopicPartition,
        publisher: PartitionPublisher,
        *,
        state: DesiredState,
        ledger: Ledger,
        handler: Handler,
        resource_of: ResourceOf,
        dlq_topic: str,
        results_topic: str,
        max_in_flight: int,
        publish_retries: int = 5,
    ) -> None:
        self.partition = partition
        self._publisher = publisher
        self._state = state
        self._ledger = ledger
        self._handler = handler
        self._resource_of = resource_of
        self._dlq_topic = dlq_topic
        self.results_topic = results_topic
        self._max_in_flight = max_in_flight
        self._publish_retries = publish_retries
        self._queue: deque[Record] = deque()
        self._wakeup = asyncio.Event()
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        self._by_resource: dict[str, asyncio.Task[None]] = {}
        self._finished: set[int] = set()
        self._transaction = asyncio.Lock()  # one transaction at a time on the partition's producer
        self.watermark: int | None = None  # next offset to commit; None until the first record
        self.broken: LaneBroken | None = None
        self.lost = False  # another daemon's producer fenced ours: the partition is no longer ours
        self._runner = asyncio.create_task(self._run(), name=f"lane-{partition.partition}")

    # --- feeding -------------------------------------------------------------------------------

    def offer(self, records: list[Record]) -> None:
        log.debug("%s: offered offsets %s", self.partition, [r.offset for r in records])
        if records and self.watermark is None:
            self.watermark = records[0].offset
        self._queue.extend(records)
        self._wakeup.set()

    @property
    def full(self) -> bool:
        return len(self._queue) + len(self._in_flight) >= self._max_in_flight

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            while len(self._in_flight) >= self._max_in_flight:
                await asyncio.wait(list(self._in_flight.values()), return_when=asyncio.FIRST_COMPLETED)
            record = self._queue.popleft()
            await self._dispatch(record)

    async def _dispatch(self, record: Record) -> None:
        log.debug("%s: dispatching offset %d", self.partition, record.offset)
        topic, partition = self.partition.topic, self.partition.partition
        if self._ledger.answered(topic, partition, record.offset):
            log.info("offset %d of %s already answered before a restart; skipping", record.offset, self.partition)
            self._start(record, self._skip(record))
            return
        try:
            event = decode_request(record.value)
            _check_key(event, record.key)
        except InvalidEvent as e:
            self._start(record, self._finish(record, Completion([self._dead_letter(record, e.reason, str(e))])))
            return
        resource = self._resource_of(event)
        if resource is None:  # barrier: everything before it finishes first
            await asyncio.gather(*self._in_flight.values(), return_exceptions=True)
        else:
            previous = self._by_resource.get(resource)
            if previous is not None and not previous.done():
                await asyncio.gather(previous, return_exceptions=True)
        task = self._start(record, self._handle(record, event))
        if resource is None:
            await asyncio.gather(task, return_exceptions=True)  # and nothing after it starts before it ends
        else:
            self._by_resource[resource] = task
            task.add_done_callback(functools.partial(self._forget, resource))

    def _forget(self, resource: str, task: asyncio.Task[None]) -> None:
        if self._by_resource.get(resource) is task:
            del self._by_resource[resource]

    def _start(self, record: Record, work: Awaitable[None]) -> asyncio.Task[None]:
        async def run() -> None:
            try:
                await work
            except PartitionLost as e:
                log.warning("%s", e)
                self.lost = True
            except TemporaryError as e:
                self._break(f"commit of offset {record.offset} failed: {e}")
            except Exception as e:  # a bug in committing: re-read from the watermark rather than stall
                log.exception("lane %s: offset %d could not be finished", self.partition, record.offset)
                self._break(f"offset {record.offset}: {type(e).__name__}: {e}")
            finally:
                self._in_flight.pop(record.offset, None)

        task = asyncio.create_task(run(), name=f"request-{self.partition.partition}-{record.offset}")
        self._in_flight[record.offset] = task
        return task

    # --- one record -----------------------------------------------------------------------------

    async def _handle(self, record: Record, event: Event) -> None:
        metrics.REQUESTS_RECEIVED.labels(REQUEST_KINDS.get(event.type, "unknown")).inc()
        metrics.IN_FLIGHT.inc()
        try:
            completion = await self._handler(event, Intent(self))
        except (PartitionLost, asyncio.CancelledError):
            raise
        except Exception as e:  # a bug must not block the partition: park the request with the reason
            log.exception("handler crashed on %s offset %d", record.topic, record.offset)
            completion = Completion([self._dead_letter(record, "HandlerCrashed", f"{type(e).__name__}: {e}")])
        finally:
            metrics.IN_FLIGHT.dec()
        await self._finish(record, completion)

    async def _skip(self, record: Record) -> None:
        await self._finish(record, Completion([]), ledgered=True)

    async def _finish(self, record: Record, completion: Completion, *, ledgered: bool = False) -> None:
        """Commit this record's outcome, and the offset over every contiguous finished record."""
        async with self._transaction:
            self._finished.add(record.offset)
            old = self.watermark if self.watermark is not None else record.offset
            new = old
            while new in self._finished:
                self._finished.discard(new)
                new += 1
            topic, partition = self.partition.topic, self.partition.partition
            changes = list(completion.changes)
            ledger: list[StateChange] = []
            if record.offset >= new and not ledgered:  # finished out of order: remember it was answered
                ledger.append(StateChange(ledger_key(topic, partition, record.offset), b"1"))
            # ledger entries the offset now passes are no longer needed
            ledger += [
                StateChange(ledger_key(topic, partition, o), None)
                for o in self._ledger.entries(topic, partition, below=new)
            ]
            outgoing = completion.messages + self._publisher.state_records(changes + ledger)
            await self._publish(outgoing, commit_offset=new if new > old else None)
            self.watermark = new
            for change in changes:
                self._state.apply(change)
            for change in ledger:
                self._ledger.apply(change.key, change.value)

    async def publish_messages(self, messages: list[Outgoing]) -> None:
        async with self._transaction:
            await self._publish(messages, commit_offset=None)

    async def publish_state(self, changes: list[StateChange]) -> None:
        async with self._transaction:
            await self._publish(self._publisher.state_records(changes), commit_offset=None)
        for change in changes:
            self._state.apply(change)

    async def _publish(self, outgoing: list[Outgoing], *, commit_offset: int | None) -> None:
        delay = 0.5
        for attempt in range(self._publish_retries + 1):
            try:
                await self._publisher.publish(outgoing, commit_offset=commit_offset)
            except TemporaryError:
                if attempt == self._publish_retries:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            else:
                return

    def _break(self, reason: str) -> None:
        log.error("lane %s: %s; it will re-read from offset %s", self.partition, reason, self.watermark)
        self.broken = LaneBroken(self.watermark or 0)

    def _dead_letter(self, record: Record, reason: str, message: str) -> Outgoing:
        log.warning("dead letter from %s/%d@%d: %s: %s", record.topic, record.partition, record.offset, reason, message)
        metrics.DEAD_LETTERS.labels(reason).inc()
        headers = [
            *list(record.headers or ()),
            ("dlq_reason", reason.encode()),
            ("dlq_message", message[:4000].encode()),
            ("dlq_topic", record.topic.encode()),
            ("dlq_partition", str(record.partition).encode()),
            ("dlq_offset", str(record.offset).encode()),
        ]
        return Outgoing(self._dlq_topic, record.key, record.value, headers)

    # --- stopping -------------------------------------------------------------------------------

    async def drain(self, grace: float) -> None:
        """Stop taking records; let in-flight ones finish within ``grace`` seconds, then cancel them.

        A cancelled request is not committed: it is redelivered and resumes from its recorded intent.
        """
        self._queue.clear()
        self._runner.cancel()
        await asyncio.gather(self._runner, return_exceptions=True)
        tasks = list(self._in_flight.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                log.warning(
                    "%s: %d in-flight request(s) abandoned; they will be redelivered", self.partition, len(pending)
                )
                await asyncio.gather(*pending, return_exceptions=True)


def _check_key(event: Event, key: bytes | None) -> None:
    cluster = getattr(event.data, "cluster", None)
    if key is None or key.decode(errors="replace") != cluster:
        shown = key.decode(errors="replace") if key is not None else None
        raise InvalidEvent(
            f"message key {shown!r} does not match data.cluster {cluster!r}; requests are keyed by cluster id",
            reason="KeyMismatch",
        )
