"""The one shape of every change to storage: record intent, run the node steps, finish or roll back.

Heketi runs each operation as Build / Exec / Rollback / Finalize; so do we, for provision, expand,
delete and each brick move of an evacuation:

1. ``record``: plan (placement is pure) and durably record the intent in the state topic *before*
   any node is touched, so a crash at any later instant leaves state naming everything that may
   exist on a node. Refusals (no room, a conflict, a claim that is gone) happen here, when there is
   nothing to undo.
2. ``execute``: the node steps, each idempotent and each retried by ``handling.retry``; a
   redelivered request runs them again and converges.
3. ``roll_back``: when execute fails for good, undo what it may have done on the nodes; it returns
   the state changes that commit with the failure result (a tombstone once the bricks are gone, or
   nothing, keeping the record for a later request or ``reconcile`` when the nodes cannot be
   cleaned now).
4. ``finish``: what the operation comes to: for a volume request its success outcome with the
   state changes that commit with it, for a brick move the move recorded as done.

``run`` drives the four; a failure leaves it as ``OperationFailed``, the one failure channel the
dispatcher (``handling.dispatch``) turns into a failure result, with the rollback's state changes.
"""

from __future__ import annotations

import logging
from typing import Protocol, TypeVar

from provisioner.errors import ProvisionerError
from provisioner.state import StateChange

log = logging.getLogger(__name__)
R = TypeVar("R", covariant=True)
D = TypeVar("D")


class OperationFailed(Exception):
    """An operation's node steps failed for good; ``cause`` is why, ``changes`` commit with the answer."""

    def __init__(self, cause: ProvisionerError, *, volume: str | None, changes: tuple[StateChange, ...]) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.volume = volume
        self.changes = changes


class Operation(Protocol[D, R]):
    @property
    def volume_id(self) -> str | None:
        """The volume the operation works on (for the failure result), once known."""
        ...

    async def record(self) -> None: ...

    async def execute(self) -> D: ...

    async def roll_back(self, failure: ProvisionerError) -> tuple[StateChange, ...]: ...

    async def finish(self, done: D) -> R: ...


async def run(operation: Operation[D, R]) -> R:
    """Record, execute, finish; on a failure of execute, roll back and raise ``OperationFailed``."""
    await operation.record()
    try:
        done = await operation.execute()
    except ProvisionerError as failure:
        try:
            changes = await operation.roll_back(failure)
        except ProvisionerError as e:
            # The record stays: the volume remains owned, and a repeated request or reconcile cleans up.
            log.error("rollback after %s failed, the record is kept: %s", failure.reason, e)
            changes = ()
        raise OperationFailed(failure, volume=operation.volume_id, changes=changes) from failure
    return await operation.finish(done)
