"""Runs node commands on this machine, for a node that is the provisioner's own host."""

from __future__ import annotations

import asyncio
import contextlib

from provisioner.errors import CommandTimeout
from provisioner.executor import Argv, CommandResult


class LocalExecutor:
    """Executes argv directly (no shell); ``host`` is only recorded in results."""

    async def run(self, host: str, argv: Argv, *, timeout: float, check: bool = True) -> CommandResult:
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise CommandTimeout(host, argv, timeout) from None
        result = CommandResult(
            host=host,
            argv=argv,
            exit_status=process.returncode if process.returncode is not None else -1,
            stdout=stdout.decode(errors="replace"),
            stderr=stderr.decode(errors="replace"),
        )
        return result.check() if check else result

    async def close(self) -> None:
        return None
