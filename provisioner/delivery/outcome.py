"""What handling one request comes to, and the port through which it records intent before node work.

An ``Outcome`` is the request's one result event (success or failure) plus the state changes that
commit with it; the bus commits both and the input offset in one Kafka transaction, so they are
never seen apart. It is built once, by the handler, and encoded once, by the bus.

``IntentWriter`` publishes state changes *before* node work, and progress events, so a crash at any
instant leaves state naming everything that may exist on a node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from provisioner.events import catalog
from provisioner.events.envelope import Event
from provisioner.state import StateChange


@dataclass(frozen=True, slots=True)
class Outcome:
    result: Event
    key: str  # the Kafka key of the result: the volume id, else the cluster id
    changes: tuple[StateChange, ...] = ()

    @property
    def succeeded(self) -> bool:
        return catalog.is_success(self.result.type)


class IntentWriter(Protocol):
    async def record(self, changes: list[StateChange]) -> None:
        """Durably publish state changes now (before node work), and apply them locally."""
        ...

    async def progress(self, event: Event, key: str) -> None:
        """Publish a progress event (not a result) now."""
        ...
