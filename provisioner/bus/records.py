"""Every record the daemon writes, encoded in one place: results, progress events, state records and
dead letters, each bounded in size.

A record larger than the producer may send would fail its transaction again on every retry, and
the lane would re-read the same offset forever. So nothing written here can exceed ``limit``:

* a dead letter carries the original value and headers when they fit; otherwise the original is kept
  by reference — its topic, partition and offset (where it still is, for the retention period), its
  size, a SHA-256 and the first bytes — in a small JSON document, with ``dlq_original: reference``;
* result and progress events are built from bounded models (``events.models`` caps every message);
  one that still does not fit (a bug) raises here, before the transaction, naming the request.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from provisioner import metrics
from provisioner.delivery.outcome import Outcome
from provisioner.errors import Internal
from provisioner.events.envelope import Event, Headers, encode
from provisioner.state import StateChange

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 900 * 1024
"""Bytes a record (value + key + headers) may take: under the 1 MiB default ``max.request.size``
with room for the batch overhead."""
HEAD_BYTES = 1024
"""How much of an oversized original a dead letter keeps, to show what it was."""
MESSAGE_LIMIT = 4000
"""Characters of a dead letter's ``dlq_message``."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers

    @property
    def size(self) -> int:
        return len(self.value or b"") + len(self.key or b"") + sum(len(k.encode()) + len(v) for k, v in self.headers)


@dataclass(frozen=True, slots=True)
class Topics:
    results: str
    state: str
    dlq: str
    limit: int = DEFAULT_LIMIT


class Records:
    """Encodes what the lane writes, for one set of topics."""

    def __init__(self, topics: Topics) -> None:
        self.topics = topics

    def result(self, outcome: Outcome) -> Outgoing:
        """The result event of an outcome (its state changes go through ``state``)."""
        return self._event(outcome.result, outcome.key)

    def progress(self, event: Event, key: str) -> Outgoing:
        return self._event(event, key)

    def state(self, changes: Sequence[StateChange]) -> list[Outgoing]:
        return [Outgoing(self.topics.state, c.key.encode(), c.value, []) for c in changes]

    def _event(self, event: Event, key: str) -> Outgoing:
        value, headers = encode(event)
        record = Outgoing(self.topics.results, key.encode(), value, headers)
        if record.size > self.topics.limit:
            raise Internal(f"the {event.type} event of {key} is {record.size} bytes, over {self.topics.limit}")
        return record

    def dead_letter(
        self,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]],
        reason: str,
        message: str,
    ) -> Outgoing:
        """The dead letter of one input record, with why (``dlq_*`` headers), never over the limit."""
        log.warning("dead letter from %s/%d@%d: %s: %s", topic, partition, offset, reason, message[:1000])
        metrics.DEAD_LETTERS.labels(reason).inc()
        ours: Headers = [
            ("dlq_reason", reason.encode()),
            ("dlq_message", message[:MESSAGE_LIMIT].encode(errors="replace")),
            ("dlq_topic", topic.encode()),
            ("dlq_partition", str(partition).encode()),
            ("dlq_offset", str(offset).encode()),
        ]
        key = key if key is None or len(key) <= HEAD_BYTES else key[:HEAD_BYTES]
        whole = Outgoing(self.topics.dlq, key, value, [*headers, *ours])
        if whole.size <= self.topics.limit:
            return whole
        original = value or b""
        reference = {
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "size": len(original),
            "headers": len(headers),
            "sha256": hashlib.sha256(original).hexdigest(),
            "head": base64.b64encode(original[:HEAD_BYTES]).decode(),
        }
        return Outgoing(
            self.topics.dlq,
            key,
            json.dumps({"original": reference}, separators=(",", ":")).encode(),
            [*ours, ("dlq_original", b"reference")],
        )
