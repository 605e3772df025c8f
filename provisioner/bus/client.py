"""The producer side: publish a request and, if asked, wait for its one result.

The result reader starts at the end of the results topic *before* the request is sent, reads with
``read_committed`` (so aborted attempts of a crashed daemon are invisible), and matches on
``data.request_id``.
"""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from provisioner.bus.publisher import idempotent_producer
from provisioner.bus.topics import topic_partitions
from provisioner.errors import InvalidEvent, KafkaUnavailable
from provisioner.events.catalog import is_terminal
from provisioner.events.envelope import Event, decode_result, encode
from provisioner.settings import KafkaSettings


class ResultWaiter:
    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            request_timeout_ms=int(settings.request_timeout * 1000),
        )

    async def __aenter__(self) -> ResultWaiter:
        partitions = await topic_partitions(self._settings, self._settings.results_topic)
        try:
            await self._consumer.start()
            self._consumer.assign(partitions)
            await self._consumer.seek_to_end(*partitions)
            for tp in partitions:  # resolve the end position now, before the request goes out
                await self._consumer.position(tp)
        except KafkaError as e:
            await self._consumer.stop()
            raise KafkaUnavailable(f"cannot read results from {self._settings.bootstrap}: {e}") from e
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._consumer.stop()

    async def wait(self, request_id: str, *, timeout: float) -> Event:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            batches = await self._consumer.getmany(timeout_ms=int(min(left, 1.0) * 1000))
            for records in batches.values():
                for record in records:
                    try:
                        event = decode_result(record.value)
                    except InvalidEvent:
                        continue  # not ours to judge here; the daemon never writes such events
                    if is_terminal(event.type) and getattr(event.data, "request_id", None) == request_id:
                        return event
        raise TimeoutError(f"no result for request {request_id} within {timeout:g}s")


async def publish(settings: KafkaSettings, event: Event, *, key: str) -> None:
    sender = RequestSender(settings)
    await sender.start()
    try:
        await sender.send(event, key=key)
    finally:
        await sender.stop()


async def request(settings: KafkaSettings, event: Event, *, key: str, wait: float | None) -> Event | None:
    """Publish ``event``; with ``wait`` seconds, return its result (TimeoutError if none came)."""
    if wait is None:
        await publish(settings, event, key=key)
        return None
    async with ResultWaiter(settings) as waiter:
        await publish(settings, event, key=key)
        return await waiter.wait(event.id, timeout=wait)


class RequestSender:
    """A long-lived idempotent producer of requests (the watcher; ``publish`` for one), keyed by cluster."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._producer = idempotent_producer(settings)

    async def start(self) -> None:
        try:
            await self._producer.start()
        except KafkaError as e:
            await self._producer.stop()
            raise KafkaUnavailable(f"cannot reach Kafka at {self._settings.bootstrap}: {e}") from e

    async def stop(self) -> None:
        await self._producer.stop()

    async def send(self, event: Event, *, key: str) -> None:
        value, headers = encode(event)
        try:
            await self._producer.send_and_wait(
                self._settings.requests_topic, value=value, key=key.encode(), headers=headers
            )
        except KafkaError as e:
            raise KafkaUnavailable(f"cannot publish to {self._settings.requests_topic}: {e}") from e
