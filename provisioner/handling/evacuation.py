"""Evacuation: every brick moves off the devices that leave, one brick at a time, before they go.

Each move is an operation (``handling.operation``): recorded first (the volume lists both bricks
and the pair, ``Volume.replacing``), then the new brick is built and swapped in with
``replace-brick … commit force`` once the set is healed, and the old one destroyed; a move that
fails before gluster took the new brick is abandoned (the new brick destroyed, the record put
back). So a crash at any instant leaves a record that a redelivered or repeated request resumes:
recorded moves are finished first, then the rest are planned. Refusals (a distribute volume, no
room) come before any node is touched. The plans themselves are pure (``planning.evacuation``).
"""

from __future__ import annotations

import functools
import logging

from provisioner import metrics
from provisioner.domain import Cluster, NodeId
from provisioner.errors import NodeUnreachable, ProvisionerError
from provisioner.handling.operation import run
from provisioner.handling.request import Request, Storage
from provisioner.handling.results import progress
from provisioner.planning import evacuation
from provisioner.state import StateChange
from provisioner.storage.moves import BrickMoves

log = logging.getLogger(__name__)


async def evacuate(storage: Storage, request: Request, cluster: Cluster, remaining: Cluster) -> None:
    """Move every brick off the devices that ``remaining`` lacks."""
    state = storage.state
    leaving = {d.id for n in cluster.nodes for d in n.devices} - {d.id for n in remaining.nodes for d in n.devices}
    gone = frozenset({n.id for n in cluster.nodes} - {n.id for n in remaining.nodes})
    affected = evacuation.affected(state.volumes_of(cluster.id), leaving)
    evacuation.check_movable(affected, leaving)
    moves = BrickMoves(storage.ops)
    for volume in affected:
        for move in evacuation.pending(volume):
            log.info("%s: resuming the move of brick %s to %s", volume.name, move.old.id, move.new.id)
            await run(Move(storage, moves, request, cluster, move, gone, recorded=True))
    async with storage.lock(cluster.id):
        placeable, _ = storage.placement.placeable(cluster)  # no new brick on a node that is down
        with metrics.step("allocate"):
            planned = evacuation.plan_evacuation(
                state.volumes_of(cluster.id), placeable, state.usage(cluster.id), leaving, storage.limits
            )
    for number, move in enumerate(planned, 1):
        await run(Move(storage, moves, request, cluster, move, gone, recorded=False))
        moved = f"brick {move.old.id} moved to {move.new.id} ({number} of {len(planned)})"
        log.info("%s: %s", move.volume, moved)
        event = progress(request.event, state.volumes[move.volume], "brick_moved", moved, source=request.source)
        await request.retrying(functools.partial(request.intent.progress, event, move.volume), what="progress")


class Move:
    """One brick move: record, build and swap, then destroy the old brick and record it done."""

    def __init__(
        self,
        storage: Storage,
        moves: BrickMoves,
        request: Request,
        cluster: Cluster,
        move: evacuation.Move,
        gone: frozenset[NodeId],
        *,
        recorded: bool,
    ) -> None:
        self._storage = storage
        self._moves = moves
        self._request = request
        self._cluster = cluster
        self._move = move
        self._gone = gone
        self._recorded = recorded
        self.volume_id: str | None = move.volume

    async def record(self) -> None:
        if self._recorded:
            return
        planned = evacuation.moving(self._storage.state.volumes[self._move.volume], self._move)
        await self._storage.record(self._request, planned)

    async def execute(self) -> None:
        cluster, move, retrying = self._cluster, self._move, self._request.retrying
        volume = self._storage.state.volumes[move.volume]  # lists both bricks
        ops, moves = self._storage.ops, self._moves
        await retrying(lambda: moves.ensure_healed(cluster, volume, move.old), what=f"wait for {volume.name} to heal")
        with metrics.step("brick_create"):
            await retrying(lambda: ops.create_brick(cluster, volume, move.new), what=f"create brick {move.new.id}")
        await retrying(
            lambda: moves.replace_brick(cluster, volume, move.old, move.new), what=f"replace brick {move.old.id}"
        )

    async def roll_back(self, failure: ProvisionerError) -> tuple[StateChange, ...]:
        """Undo a move that failed before gluster took the new brick: destroy it, drop it from the
        record. If gluster lists it, the record stays for a repeated request to finish the move."""
        cluster, move, rollback = self._cluster, self._move, self._request.rollback
        volume = self._storage.state.volumes[move.volume]
        listed = await rollback(
            lambda: self._moves.has_brick(cluster, volume, move.new, last=move.old), what=f"look for {move.new.id}"
        )
        if listed:
            return ()
        await rollback(lambda: self._storage.ops.destroy_brick(cluster, volume, move.new), what=f"remove {move.new.id}")
        return (StateChange.put_volume(evacuation.abandoned(volume, move)),)

    async def finish(self, _: None) -> None:
        """Destroy the old brick, then record the volume with the new brick in its place. The old
        brick of a node that is leaving and unreachable (a dead node) stays where it is: the node
        leaves the pool, and a dead node must not block its own removal."""
        cluster, move = self._cluster, self._move
        volume = self._storage.state.volumes[move.volume]
        old_host = cluster.node(move.old.node).manage

        async def destroy_old() -> None:
            try:
                await self._storage.ops.destroy_brick(cluster, volume, move.old)
            except NodeUnreachable as e:
                if move.old.node not in self._gone:
                    raise
                log.warning("brick %s stays on %s, which leaves the cluster unreachable: %s", move.old.id, old_host, e)

        await self._request.retrying(destroy_old, what=f"destroy brick {move.old.id} on {old_host}")
        await self._storage.record(self._request, evacuation.moved(self._storage.state.volumes[move.volume], move))
