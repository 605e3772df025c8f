"""Crash injection for tests of crash safety: the process exits right after a chosen node command.

Enabled only by the setting ``worker.crash_after`` (``<command>:<n>``, e.g. ``mkfs.xfs:1`` or
``gluster_volume_start:1``; command names as in the ``command`` label of the node metrics). The
exit is ``os._exit``: no cleanup, no commit, as a power cut or ``kill -9`` would leave things.
"""

from __future__ import annotations

import logging
import os

from provisioner.executor import Argv, CommandResult, Executor
from provisioner.executor.measured import command_name

log = logging.getLogger(__name__)
CRASH_EXIT_CODE = 70


class CrashAfter:
    def __init__(self, inner: Executor, spec: str) -> None:
        command, _, count = spec.rpartition(":")
        if not command or not count.isdigit() or int(count) < 1:
            raise ValueError(f"crash_after {spec!r}: write COMMAND:N, e.g. mkfs.xfs:1")
        self._inner = inner
        self._command = command
        self._left = int(count)

    async def run(self, host: str, argv: Argv, *, timeout: float, check: bool = True) -> CommandResult:
        result = await self._inner.run(host, argv, timeout=timeout, check=check)
        if command_name(argv) == self._command:
            self._left -= 1
            if self._left == 0:
                log.critical("crash injection: exiting after %s on %s", self._command, host)
                os._exit(CRASH_EXIT_CODE)
        return result

    async def close(self) -> None:
        await self._inner.close()
