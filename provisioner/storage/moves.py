"""Moving one brick of a volume to another device (evacuation), on the nodes.

A move is ``replace-brick … commit force``: gluster swaps the brick in place and self-heal fills
the new one from the rest of its set. So a move must never start while the set is itself healing
(``ensure_healed``, Heketi's check), and every step is judged by what gluster lists afterwards, not
by its messages, so that a move interrupted at any instant is resumed rather than repeated.
Calls run on the volume's nodes with the old brick's node last: evacuating a dead node costs no
connection attempt while another node answers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from provisioner.domain import Brick, Cluster, Volume
from provisioner.errors import GlusterError, HealPending, TemporaryError, VolumeNotFound
from provisioner.storage import commands
from provisioner.storage.operations import VolumeOperations, manage_hosts
from provisioner.storage.parsing import UnparsableOutput, parse_heal_info, parse_volume_info

log = logging.getLogger(__name__)


class BrickMoves:
    def __init__(self, operations: VolumeOperations) -> None:
        self._ops = operations
        self._cli = operations.cli

    async def has_brick(self, cluster: Cluster, volume: Volume, brick: Brick, *, last: Brick) -> bool:
        """Whether the gluster volume lists ``brick`` (asked on its nodes, ``last``'s node last)."""
        [spec] = self._ops.specs(cluster, volume, [brick])
        return (spec.node.storage, spec.path) in await self._listed(cluster, _hosts_last(cluster, volume, last), volume)

    async def ensure_healed(self, cluster: Cluster, volume: Volume, old: Brick) -> None:
        """Refuse (temporarily) to move ``old`` while its set is still healing, so a move never takes a
        set below the copies it has: every other brick of the set must be connected with nothing left to
        heal. When ``old`` itself does not answer (its node is dead), replacing it *is* the repair, so
        only the others being connected is required."""
        argv = commands.volume_heal_info(volume.name, timeout=self._cli.timeout)
        answer = await self._cli.call(manage_hosts(cluster, volume), argv, pool=cluster.id, what=volume.name)
        if not answer.ok:
            raise GlusterError(f"volume heal {volume.name} info: {answer.message}")
        try:
            heals = {(b.host, b.path): b for b in parse_heal_info(answer.stdout)}
        except UnparsableOutput as e:
            raise GlusterError(f"volume heal {volume.name} info on {answer.host}: unreadable answer: {e}") from e
        specs = {s.brick.id: s for s in self._ops.specs(cluster, volume)}
        mine = specs[old.id]
        old_heal = heals.get((mine.node.storage, mine.path))
        old_answers = old_heal is not None and old_heal.connected
        arriving = {r.new for r in volume.replacing}  # recorded, not in gluster yet
        for brick in volume.bricks:
            if brick.set_index != old.set_index or brick.id == old.id or brick.id in arriving:
                continue
            spec = specs[brick.id]
            heal = heals.get((spec.node.storage, spec.path))
            where = f"{spec.node.storage}:{spec.path}"
            if heal is None or not heal.connected:
                raise HealPending(
                    f"volume {volume.name}: brick {where} of the set is not connected; the move of {old.id} waits",
                    delay=5.0,
                )
            if old_answers and heal.pending:
                raise HealPending(
                    f"volume {volume.name}: {heal.pending} entries still to heal on {where}; "
                    f"the move of {old.id} waits so the set keeps its copies",
                    delay=5.0,
                )

    async def replace_brick(self, cluster: Cluster, volume: Volume, old: Brick, new: Brick) -> bool:
        """Swap ``old`` for ``new`` in the gluster volume: True when swapped now, False when gluster
        already had ``new`` in ``old``'s place (a resumed move).

        ``volume`` lists both bricks and ``new`` is built. "does not exist" (the swap happened, its
        answer was lost) is success when ``new`` is listed afterwards.
        """
        hosts = _hosts_last(cluster, volume, old)
        old_spec, new_spec = self._ops.specs(cluster, volume, [old, new])
        old_key, new_key = (old_spec.node.storage, old_spec.path), (new_spec.node.storage, new_spec.path)
        present = await self._listed(cluster, hosts, volume)
        if new_key in present:
            return False
        if old_key not in present:
            raise GlusterError(
                f"volume {volume.name} lists neither {':'.join(old_key)} nor {':'.join(new_key)}; "
                "its bricks changed outside the provisioner"
            )
        argv = commands.volume_replace_brick(
            volume.name,
            commands.brick_argument(*old_key),
            commands.brick_argument(*new_key),
            timeout=self._cli.timeout,
        )
        result = await self._cli.call(hosts, argv, pool=cluster.id, what=volume.name)
        if result.ok:
            return True
        if new_key in await self._listed(cluster, hosts, volume):
            return False
        if "already part of" in result.message:
            # glusterd marks the new brick's directory while staging; a try that failed later leaves the
            # mark, and gluster then refuses the directory. The brick is ours and no volume uses it:
            # rebuild it, and let the retry owner try the swap again.
            log.warning("%s: %s; rebuilding brick %s", volume.name, result.message, new.id)
            await self._ops.destroy_brick(cluster, volume, new)
            await self._ops.create_brick(cluster, volume, new)
            raise TemporaryError(f"volume {volume.name}: brick {new.id} rebuilt after '{result.message}'", delay=0.5)
        raise GlusterError(f"volume replace-brick {volume.name} {':'.join(old_key)}: {result.message}")

    async def _listed(self, cluster: Cluster, hosts: Sequence[str], volume: Volume) -> set[tuple[str, str]]:
        """(host, path) of every brick gluster lists for ``volume``; a volume gluster lacks is an error."""
        argv = commands.volume_info(volume.name, timeout=self._cli.timeout)
        answer = await self._cli.call(hosts, argv, pool=cluster.id, what=volume.name)
        try:
            found = parse_volume_info(answer.stdout) if answer.ok else []
        except UnparsableOutput as e:
            raise GlusterError(f"volume info {volume.name} on {answer.host}: unreadable answer: {e}") from e
        if not found:
            if answer.ok or answer.verdict.missing:
                raise VolumeNotFound(f"volume {volume.name} is gone; cannot move its bricks")
            raise GlusterError(f"volume info {volume.name}: {answer.message}")
        return {(b.host, b.path) for b in found[0].bricks}


def _hosts_last(cluster: Cluster, volume: Volume, last: Brick) -> list[str]:
    """The manage hosts of the volume's nodes, in brick order, with ``last``'s node moved to the end."""
    final = cluster.node(last.node).manage
    return [*(h for h in manage_hosts(cluster, volume) if h != final), final]
