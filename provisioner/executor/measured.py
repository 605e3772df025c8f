"""An Executor wrapper that records per-command latency and failures as metrics."""

from __future__ import annotations

import logging
import time

from provisioner import metrics
from provisioner.errors import CommandFailed, ProvisionerError
from provisioner.executor import Argv, CommandResult, Executor

log = logging.getLogger(__name__)


class MeasuredExecutor:
    def __init__(self, inner: Executor) -> None:
        self._inner = inner

    async def run(self, host: str, argv: Argv, *, timeout: float, check: bool = True) -> CommandResult:
        command = command_name(argv)
        started = time.monotonic()
        try:
            result = await self._inner.run(host, argv, timeout=timeout, check=check)
        except CommandFailed:
            metrics.NODE_COMMAND_FAILURES.labels(command, host, "exit").inc()
            raise
        except ProvisionerError as e:
            metrics.NODE_COMMAND_FAILURES.labels(command, host, e.reason).inc()
            raise
        finally:
            metrics.NODE_COMMAND_SECONDS.labels(command, host).observe(time.monotonic() - started)
        log.debug("%s on %s: exit %d in %.2fs", " ".join(argv), host, result.exit_status, time.monotonic() - started)
        return result

    async def close(self) -> None:
        await self._inner.close()


def command_name(argv: Argv) -> str:
    """``gluster volume create`` → ``gluster_volume_create``; others by program name (bounded set)."""
    if argv and argv[0] == "gluster":
        words = [a for a in argv[1:] if not a.startswith("-")][:2]
        return "_".join(["gluster", *words])
    return argv[0] if argv else "?"
