"""Crash injection for tests of crash safety: the process exits at the Nth passing of a chosen point.

Enabled only by the setting ``worker.crash_after`` (``<point>:<n>``). A point is a node command, named
as in the ``command`` label of the node metrics (``mkfs.xfs:1``, ``gluster_volume_start:1``: exit right
after the command ran), or a phase of a Kafka transaction (``transaction_sent``: every record is on the
broker and the commit not yet asked for; ``transaction_committed``: committed, nothing applied in
memory yet). The exit is ``os._exit``: no cleanup, no commit, as a power cut or ``kill -9`` would
leave things.
"""

from __future__ import annotations

import logging
import os

from provisioner.executor import Argv, CommandResult, Executor
from provisioner.executor.measured import command_name

log = logging.getLogger(__name__)
CRASH_EXIT_CODE = 70
TRANSACTION_POINTS = ("transaction_sent", "transaction_committed")


class Countdown:
    """Exits the process when one named point has been passed N times."""

    def __init__(self, spec: str) -> None:
        point, _, count = spec.rpartition(":")
        if not point or not count.isdigit() or int(count) < 1:
            raise ValueError(f"crash_after {spec!r}: write POINT:N, e.g. mkfs.xfs:1 or transaction_sent:2")
        self.point = point
        self._left = int(count)

    def passed(self, point: str, where: str = "") -> None:
        if point != self.point:
            return
        self._left -= 1
        if self._left == 0:
            log.critical("crash injection: exiting at %s %s", point, where)
            os._exit(CRASH_EXIT_CODE)


class CrashAfter:
    """An executor that passes its countdown a point per node command, after the command ran."""

    def __init__(self, inner: Executor, countdown: Countdown) -> None:
        self._inner = inner
        self._countdown = countdown

    async def run(self, host: str, argv: Argv, *, timeout: float, check: bool = True) -> CommandResult:
        result = await self._inner.run(host, argv, timeout=timeout, check=check)
        self._countdown.passed(command_name(argv), f"on {host}")
        return result

    async def close(self) -> None:
        await self._inner.close()
