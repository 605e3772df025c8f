"""What handling a request produces, and the port through which it records intent before node work.

An ``Outcome`` is the one result event plus the state changes that commit with it; the caller (the
bus lane) publishes both and the input offset in one transaction. ``IntentWriter`` publishes state
changes *before* node work, and progress events, so a crash at any instant leaves state naming
everything that may exist on a node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from provisioner.domain import Volume
from provisioner.events import models
from provisioner.events.envelope import Event, new_event
from provisioner.state import StateChange


class IntentWriter(Protocol):
    async def record(self, changes: list[StateChange]) -> None:
        """Durably publish state changes now (before node work), and apply them locally."""
        ...

    async def progress(self, event: Event, key: str) -> None:
        """Publish a progress event (not a result) now."""
        ...


@dataclass(frozen=True, slots=True)
class Outcome:
    result: Event
    key: str
    changes: list[StateChange]


def succeeded(event: Event, data: models.Model, *, source: str, key: str, subject: str | None) -> Outcome:
    """The success result of ``event`` (no state changes yet: callers add them)."""
    result = new_event(models.succeeded_type(event.type), data, source=source, subject=subject)
    return Outcome(result=result, key=key, changes=[])


async def progress(event: Event, intent: IntentWriter, volume: Volume, step: str, message: str, *, source: str) -> None:
    """Publish that a step of a long request on ``volume`` finished."""
    data = models.Progress(request_id=event.id, cluster=volume.cluster, volume_id=volume.id, step=step, message=message)
    update = new_event(models.progressed_type(event.type), data, source=source, subject=volume.id)
    await intent.progress(update, volume.id)
