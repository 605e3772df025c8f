"""Nodes with several manage hostnames: a command goes to the first, then to the next ones in order
while a hostname cannot be reached at all.

Heketi's topology lists ``manage`` hostnames per node, for a node reachable on more than one
network. Only ``NodeUnreachable`` (no connection) moves on: a command that timed out may have run,
and a host key that does not match is never a reason to try another name. Each hostname's own key
must be in ``known_hosts``, so an alternate is verified like the first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from provisioner.errors import NodeUnreachable
from provisioner.executor import Argv, CommandResult, Executor

log = logging.getLogger(__name__)


class AlternateHosts:
    def __init__(self, inner: Executor, alternates: Callable[[str], Sequence[str]]) -> None:
        """``alternates(host)``: the node's further manage hostnames, in order (none for most nodes)."""
        self._inner = inner
        self._alternates = alternates

    async def run(self, host: str, argv: Argv, *, timeout: float, check: bool = True) -> CommandResult:
        others = self._alternates(host)
        try:
            return await self._inner.run(host, argv, timeout=timeout, check=check)
        except NodeUnreachable as first:
            failure = first
        for other in others:
            try:
                result = await self._inner.run(other, argv, timeout=timeout, check=check)
            except NodeUnreachable as e:
                failure = e
                continue
            log.info("%s unreachable; %s ran on its alternate %s", host, argv[0] if argv else "?", other)
            return result
        raise failure

    async def close(self) -> None:
        await self._inner.close()
