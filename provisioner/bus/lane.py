"""One input partition's lane: run its requests concurrently where they may, commit each one's
outcome transactionally, and the offset only over the contiguous finished prefix.

The decisions are pure and tested apart: which record may start (``delivery.schedule``), what
each finished record commits (``delivery.commits``). This module only drives them with asyncio:

* every offered record is read at once: a record that cannot be decoded, or whose key is not its
  cluster, becomes a dead letter; one the ledger already answered is skipped; a request is handed
  to the handler when the schedule lets it start;
* each finished record commits, in one transaction, its result or dead letter, its state changes,
  ledger entries and the offset (``Commits.plan``), and only then applies them locally;
* nothing here retries. A failed transaction *breaks* the lane: it stops, and the consumer
  rebuilds it from what the broker has committed (a fresh producer, the state caught up, the
  committed offset), so a redelivered request is answered exactly once. A record whose commit
  keeps failing is dead-lettered (``poison``), so no record can hold its partition.
* nothing escapes unanswered: a handler that crashes parks its request as a dead letter.

Its length (over 300 lines) is the asyncio driving of one lane, kept whole so that the order of
commit, apply and break can be read in one place.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from aiokafka import TopicPartition

from provisioner import metrics
from provisioner.bus.publisher import PartitionLost, PartitionPublisher, Position
from provisioner.bus.records import Outgoing, Records
from provisioner.delivery.commits import Commits
from provisioner.delivery.ledger import Ledger, ledger_key
from provisioner.delivery.outcome import IntentWriter, Outcome
from provisioner.delivery.schedule import NOTHING, Keys, Schedule
from provisioner.errors import InvalidEvent, KafkaUnavailable, ProvisionerError
from provisioner.events.catalog import REQUEST_KINDS
from provisioner.events.envelope import Event, decode_request
from provisioner.state import StateChange

log = logging.getLogger(__name__)

Handler = Callable[[Event, IntentWriter], Awaitable[Outcome]]
KeysOf = Callable[[Event], Keys | None]
Applied = Callable[[Sequence[StateChange], Sequence[Position]], None]
"""Applies state changes just committed at these positions of the state topic (``StateTopicReader.applied``)."""
"""The volumes a request works on (``delivery.schedule``); None for a barrier."""


class Record(Protocol):
    """The fields of an aiokafka ConsumerRecord the lane reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Finished:
    """What one record commits: messages for other topics, state changes, and whether the ledger
    already had it (a skipped redelivery)."""

    messages: list[Outgoing]
    changes: tuple[StateChange, ...] = ()
    ledgered: bool = False


@dataclass(frozen=True, slots=True)
class Broken:
    offset: int  # the record whose commit failed
    reason: str


Work = Callable[[], Awaitable[Finished]]


class Lane:
    def __init__(
        self,
        partition: TopicPartition,
        publisher: PartitionPublisher,
        *,
        ledger: Ledger,
        applied: Applied,
        handler: Handler,
        keys_of: KeysOf,
        records: Records,
        max_in_flight: int,
        start: int,
        poison: int | None = None,
    ) -> None:
        """``start``: the broker's committed offset for the partition; ``poison``: an offset whose
        commit broke the lane repeatedly (it is dead-lettered instead of handled)."""
        self.partition = partition
        self._publisher = publisher
        self._applied = applied
        self._handler = handler
        self._keys_of = keys_of
        self._records = records
        self._poison = poison
        self._schedule = Schedule(limit=max_in_flight)
        self._commits = Commits(start, ledger.entries(partition.topic, partition.partition))
        self._work: dict[int, Work] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._transaction = asyncio.Lock()  # one transaction at a time on the partition's producer
        self._stopping = False
        self.broken: Broken | None = None
        self.lost = False  # another producer fenced ours

    @property
    def watermark(self) -> int:
        return self._commits.watermark

    @property
    def full(self) -> bool:
        return self._schedule.size >= self._schedule.limit

    @property
    def idle(self) -> bool:
        return not self._tasks

    # --- feeding -------------------------------------------------------------------------------

    def offer(self, records: Sequence[Record]) -> None:
        """Take fetched records of the partition (in offset order) and start what may start."""
        for record in records:
            if self._stopping:
                return
            if record.offset < self.watermark or record.offset in self._work:
                log.debug("%s: offset %d offered again; ignored", self.partition, record.offset)
                continue
            keys, work = self._read(record)
            self._work[record.offset] = work
            self._schedule.offer(record.offset, keys)
        self._start_ready()

    def _read(self, record: Record) -> tuple[Keys | None, Work]:
        """The keys and the work of one record; never raises, whatever the record holds."""
        if self._commits.is_answered(record.offset):
            log.info("%s: offset %d was answered before a restart; skipping", self.partition, record.offset)
            return NOTHING, _done(Finished([], ledgered=True))
        if record.offset == self._poison:
            why = "its commit failed repeatedly; the request is parked here unanswered"
            return NOTHING, _done(self._dead_letter(record, "CommitFailed", why))
        try:
            event = decode_request(record.value)
            _check_key(event, record.key)
        except InvalidEvent as e:
            return NOTHING, _done(self._dead_letter(record, e.dead_letter_reason, str(e)))
        except Exception as e:  # a decoder bug must cost one dead letter, never the partition
            log.exception("%s: offset %d could not be read", self.partition, record.offset)
            return NOTHING, _done(self._dead_letter(record, "Unreadable", f"{type(e).__name__}: {e}"))
        try:
            keys = self._keys_of(event)
        except Exception as e:
            log.exception("%s: offset %d: no keys", self.partition, record.offset)
            return NOTHING, _done(self._dead_letter(record, "HandlerCrashed", f"{type(e).__name__}: {e}"))
        return keys, lambda: self._handle(record, event)

    def _start_ready(self) -> None:
        if self._stopping or self.broken is not None or self.lost:
            return
        for offset in self._schedule.startable():
            work = self._work.pop(offset)
            self._tasks[offset] = asyncio.create_task(
                self._run(offset, work), name=f"request-{self.partition.partition}-{offset}"
            )

    async def _run(self, offset: int, work: Work) -> None:
        try:
            finished = await work()
            await self._commit(offset, finished)
        except PartitionLost as e:
            log.warning("%s", e)
            self.lost = True
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - any failed or uncertain commit: rebuild from what the broker has
            self._break(offset, e)
        finally:
            self._tasks.pop(offset, None)
            if self.broken is None and not self.lost:
                self._schedule.finish(offset)
                self._start_ready()

    # --- one record -----------------------------------------------------------------------------

    async def _handle(self, record: Record, event: Event) -> Finished:
        kind = REQUEST_KINDS.get(event.type, "unknown")
        metrics.REQUESTS_RECEIVED.labels(kind).inc()
        metrics.IN_FLIGHT.inc()
        started = time.monotonic()
        try:
            outcome = await self._handler(event, self)
        except (PartitionLost, asyncio.CancelledError):
            raise
        except Exception as e:  # a bug must not block the partition: park the request with the reason
            log.exception("handler crashed on %s offset %d", record.topic, record.offset)
            return self._dead_letter(record, "HandlerCrashed", f"{type(e).__name__}: {e}")
        finally:
            metrics.IN_FLIGHT.dec()
        reason = "" if outcome.succeeded else str(getattr(outcome.result.data, "reason", ""))
        metrics.REQUESTS_DONE.labels(kind, "succeeded" if outcome.succeeded else "failed", reason).inc()
        metrics.REQUEST_SECONDS.labels(kind).observe(time.monotonic() - started)
        try:
            message = self._records.result(outcome)
        except ProvisionerError as e:
            log.error("%s offset %d: %s", record.topic, record.offset, e)
            return self._dead_letter(record, "ResultTooLarge", str(e))
        return Finished([message], outcome.changes)

    def _dead_letter(self, record: Record, reason: str, message: str) -> Finished:
        letter = self._records.dead_letter(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=record.headers,
            reason=reason,
            message=message,
        )
        return Finished([letter])

    async def _commit(self, offset: int, finished: Finished) -> None:
        """Commit this record's outcome, and the offset over every contiguous finished record."""
        topic, partition = self.partition.topic, self.partition.partition
        async with self._transaction:
            self._ensure_usable()
            plan = self._commits.plan(offset, ledgered=finished.ledgered)
            ledger = [StateChange(ledger_key(topic, partition, offset), b"1")] if plan.answered else []
            ledger += [StateChange(ledger_key(topic, partition, o), None) for o in plan.forget]
            changes = [*finished.changes, *ledger]
            messages = finished.messages + self._records.state(changes)
            positions = await self._publisher.publish(messages, commit_offset=plan.commit_to)
            self._commits.apply(plan)
            self._applied(changes, positions[len(finished.messages) :])

    # --- the IntentWriter of the handlers -------------------------------------------------------

    async def record(self, changes: list[StateChange]) -> None:
        async with self._transaction:
            self._ensure_usable()
            positions = await self._publish_or_break(self._records.state(changes))
            self._applied(changes, positions)

    async def progress(self, event: Event, key: str) -> None:
        async with self._transaction:
            self._ensure_usable()
            await self._publish_or_break([self._records.progress(event, key)])

    async def _publish_or_break(self, messages: list[Outgoing]) -> list[Position]:
        try:
            return await self._publisher.publish(messages)
        except KafkaUnavailable as e:
            self._break(-1, e)
            raise

    def _ensure_usable(self) -> None:
        if self.broken is not None or self.lost:
            raise KafkaUnavailable(f"the lane of {self.partition} is being rebuilt", delay=1.0)

    def _break(self, offset: int, error: BaseException) -> None:
        if self.broken is None:
            log.error(
                "lane %s: %s at offset %d; it is rebuilt from the committed offset (%d here)",
                self.partition,
                error,
                offset,
                self.watermark,
            )
            self.broken = Broken(offset, f"{type(error).__name__}: {error}")

    # --- stopping -------------------------------------------------------------------------------

    async def drain(self, grace: float) -> None:
        """Stop taking records; let in-flight ones finish within ``grace`` seconds, then cancel them.

        A cancelled request is not committed: it is redelivered and resumes from its recorded intent.
        """
        self._stopping = True
        self._schedule.clear_waiting()
        self._work.clear()
        tasks = list(self._tasks.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace) if grace > 0 else (set(), set(tasks))
        for task in pending:
            task.cancel()
        if pending:
            log.warning("%s: %d in-flight request(s) stopped; they will be redelivered", self.partition, len(pending))
            await asyncio.gather(*pending, return_exceptions=True)


def _done(finished: Finished) -> Work:
    async def work() -> Finished:
        return finished

    return work


def _check_key(event: Event, key: bytes | None) -> None:
    cluster = getattr(event.data, "cluster", None)
    if key is None or key.decode(errors="replace") != cluster:
        shown = key[:80].decode(errors="replace") if key is not None else None
        raise InvalidEvent(
            f"message key {shown!r} does not match data.cluster {cluster!r}; requests are keyed by cluster id",
            reason="KeyMismatch",
        )
