"""Which input records already have their outcome committed, for records that finished out of order.

Requests of one partition may finish out of order (different volumes run concurrently), but the
consumer offset can only move past a contiguous prefix. A record that finishes above that prefix
commits its outcome together with a ledger record ``answered/<topic>/<partition>/<offset>`` in the
state topic; if the daemon crashes before the offset moves past it, the redelivered record is found
in the ledger and skipped, so its result is never published twice. Once the committed offset passes
a ledgered record, its entry is tombstoned: compaction then forgets it.
"""

from __future__ import annotations

PREFIX = "answered/"


def ledger_key(topic: str, partition: int, offset: int) -> str:
    return f"{PREFIX}{topic}/{partition}/{offset}"


class Ledger:
    def __init__(self) -> None:
        self._answered: set[tuple[str, int, int]] = set()

    def apply(self, key: str, value: bytes | None) -> bool:
        """Apply a state record if it is a ledger record; returns False for any other key."""
        if not key.startswith(PREFIX):
            return False
        topic, _, rest = key[len(PREFIX) :].rpartition("/")
        topic, _, partition = topic.rpartition("/")
        entry = (topic, int(partition), int(rest))
        if value is None:
            self._answered.discard(entry)
        else:
            self._answered.add(entry)
        return True

    def answered(self, topic: str, partition: int, offset: int) -> bool:
        return (topic, partition, offset) in self._answered

    def entries(self, topic: str, partition: int) -> list[int]:
        """The ledgered offsets of a partition."""
        return sorted(o for t, p, o in self._answered if t == topic and p == partition)

    def __len__(self) -> int:
        return len(self._answered)
