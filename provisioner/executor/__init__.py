"""How node commands are run: one small protocol, with SSH and local transports.

Domain code composes argv (``storage.commands``); a transport only runs it. Keeping the seam this
narrow lets tests inject faults with a fake and lets a local transport serve single-node setups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from provisioner.errors import CommandFailed

Argv = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CommandResult:
    host: str
    argv: Argv
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def check(self) -> CommandResult:
        if not self.ok:
            raise CommandFailed(self.host, self.argv, self.exit_status, self.stdout, self.stderr)
        return self


class Executor(Protocol):
    async def run(self, host: str, argv: Argv, *, timeout: float, check: bool = True) -> CommandResult:
        """Run ``argv`` on ``host``; raise CommandFailed on non-zero exit when ``check``.

        Raises NodeUnreachable, HostKeyRejected or CommandTimeout for transport failures.
        """
        ...

    async def close(self) -> None: ...
