"""The gluster CLI as the provisioner calls it: on the first node that answers, bounded per pool.

Every call is ``gluster --mode=script --xml`` (``commands.gluster``) and its XML verdict is parsed
here. Two verdicts are not failures of the operation but of the moment, and become temporary
errors for the one retry owner (``handling.retry``) to judge: glusterd busy with another
transaction on the volume (``GlusterBusy``), and glusterd unable to reach a peer
(``NodeUnreachable``). Every other verdict goes back to the caller, which knows what it means for
its operation ("already exists" is fine for a create that is being resumed, for example).

glusterd locks per volume but shares one pool; ``concurrency`` bounds the calls in flight per
trusted pool (a cluster), so a burst cannot queue hundreds of CLI processes on one glusterd.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from provisioner.errors import GlusterBusy, GlusterError, NodeUnreachable
from provisioner.executor import Argv, Executor
from provisioner.storage.parsing import OpResult, UnparsableOutput, parse_op_result

SSH_SLACK = 30.0
"""Seconds the transport waits beyond the CLI's own ``--timeout``, so gluster's verdict comes first."""


@dataclass(frozen=True, slots=True)
class Answer:
    """One CLI call's verdict and its XML document (for the calls that read one)."""

    verdict: OpResult
    stdout: str
    host: str

    @property
    def ok(self) -> bool:
        return self.verdict.ok

    @property
    def message(self) -> str:
        return self.verdict.message


class GlusterCli:
    def __init__(self, executor: Executor, *, timeout: int, concurrency: int) -> None:
        self._executor = executor
        self.timeout = timeout
        self._concurrency = concurrency
        self._pools: dict[str, asyncio.Semaphore] = {}

    async def call(self, hosts: Sequence[str], argv: Argv, *, pool: str, what: str) -> Answer:
        """Run ``argv`` on the first of ``hosts`` that answers over SSH.

        Raises GlusterBusy or NodeUnreachable for the verdicts described above, NodeUnreachable when
        no host answers, and GlusterError when there is no host at all."""
        bound = self._pools.setdefault(pool, asyncio.Semaphore(self._concurrency))
        async with bound:
            answer = await self._on_any_node(hosts, argv)
        verdict = answer.verdict
        if verdict.busy:
            raise GlusterBusy(f"{_verb(argv)} {what}: {verdict.message}", delay=0.5)
        if verdict.unreachable:
            raise NodeUnreachable(answer.host, f"glusterd there cannot reach its peers: {verdict.message}", delay=5.0)
        return answer

    async def _on_any_node(self, hosts: Sequence[str], argv: Argv) -> Answer:
        last: NodeUnreachable | None = None
        for host in hosts:
            try:
                completed = await self._executor.run(host, argv, timeout=self.timeout + SSH_SLACK, check=False)
            except NodeUnreachable as e:
                last = e
                continue
            try:
                verdict = parse_op_result(completed.stdout, completed.stderr)
            except UnparsableOutput as e:
                raise GlusterError(f"{_verb(argv)} on {host}: gluster's answer cannot be read: {e}") from e
            return Answer(verdict, completed.stdout, host)
        if last is None:
            raise GlusterError("no node to run the gluster CLI on")
        raise last


def _verb(argv: Argv) -> str:
    """``volume create`` for ``gluster --mode=script --xml --timeout=N volume create ...``."""
    words = [a for a in argv[1:] if not a.startswith("-")]
    return " ".join(words[:2])
