"""Which records of one partition may run now (pure).

Requests of a partition (one cluster's lane) run concurrently, but never two on the same volume at
once, and never anything beside a topology change:

* each record names the *keys* it works on: a volume request its volume id and its name (both, so
  a request addressed by name and another addressed by id still meet); a record that touches
  nothing (a dead letter, a skipped redelivery) names none;
* a record without keys at all (``BARRIER``: topology changes) waits for every record before it,
  and every record after it waits for it;
* a record waits for every earlier unfinished record that shares one of its keys, so requests on
  one volume run in offset order whatever they are addressed by;
* at most ``limit`` records run at once.

Records may start out of offset order (a request on another volume overtakes one that waits);
commits stay in order through ``commits.Commits``. No asyncio here: the lane asks ``startable``
after every offer and every finish.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Keys = frozenset[str]
BARRIER: Keys | None = None
"""The keys of a record that must run alone, in offset order (a topology change)."""
NOTHING: Keys = frozenset()
"""The keys of a record that touches no volume (dead letters, skipped redeliveries)."""


@dataclass(slots=True)
class _Pending:
    offset: int
    keys: Keys | None
    running: bool = False


@dataclass(slots=True)
class Schedule:
    limit: int
    _pending: list[_Pending] = field(default_factory=list)  # offered, unfinished; in offset order

    def offer(self, offset: int, keys: Keys | None) -> None:
        """Add the next record of the partition (offsets must grow)."""
        if self._pending and offset <= self._pending[-1].offset:
            raise ValueError(f"offset {offset} offered after {self._pending[-1].offset}")
        self._pending.append(_Pending(offset, keys))

    def startable(self) -> list[int]:
        """The offsets that may start now, in offset order; they count as running from here on."""
        started: list[int] = []
        running = sum(p.running for p in self._pending)
        held: set[str] = set()  # keys of earlier unfinished records
        before = False  # an earlier unfinished record exists
        for pending in self._pending:
            if running >= self.limit:
                break
            if pending.keys is None:  # a barrier: alone, and nothing after it starts before it ends
                if not before and not pending.running:
                    pending.running = True
                    started.append(pending.offset)
                break
            if not pending.running and held.isdisjoint(pending.keys):
                pending.running = True
                running += 1
                started.append(pending.offset)
            held |= pending.keys
            before = True
        return started

    def finish(self, offset: int) -> None:
        """A started record is done (answered, dead-lettered or skipped)."""
        for index, pending in enumerate(self._pending):
            if pending.offset == offset:
                if not pending.running:
                    raise ValueError(f"offset {offset} finished without having started")
                del self._pending[index]
                return
        raise ValueError(f"offset {offset} is not pending")

    @property
    def size(self) -> int:
        """Records offered and not finished (running or waiting)."""
        return len(self._pending)

    @property
    def running(self) -> list[int]:
        return [p.offset for p in self._pending if p.running]

    def clear_waiting(self) -> None:
        """Forget every record that has not started (the lane stops taking work)."""
        self._pending = [p for p in self._pending if p.running]
