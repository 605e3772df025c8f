"""Which storage nodes answer: the daemon's one node prober, run in the background.

Every ``interval`` seconds each enabled node of every cluster runs one cheap command,
``gluster --mode=script --xml --timeout=5 pool list``. It proves both daemons a node needs: the
command ran (sshd let us in) and printed gluster's XML verdict with ``opRet`` 0 (glusterd
answered). A transport failure means sshd or the network is down ("unreachable over SSH: ..."),
any other failure that glusterd is ("glusterd not answering: ...").

A node is *down* after ``down_after`` failed probes in a row (one lost packet does not move
placement) and up again at its first success. Nodes are up until a probe says otherwise, so a
node of a topology loaded a moment ago is usable at once. Each distinct host is probed once per
round even when several clusters name it.

Readers: the worker's placement treats down nodes like disabled ones (``down``), the readiness
check ``nodes`` (``provisioner.http.NodeCheck``) reads ``nodes`` and ``age``, and every round
replaces the ``provisioner_node_up`` gauge. This module decides nothing about existing volumes:
operations on them meet an unreachable node themselves and retry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from provisioner import metrics
from provisioner.domain import ClusterId
from provisioner.errors import CommandTimeout, HostKeyRejected, NodeUnreachable, ProvisionerError
from provisioner.executor import Executor
from provisioner.state import DesiredState
from provisioner.storage import commands
from provisioner.storage.parsing import parse_op_result

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
GLUSTER_TIMEOUT = 5
"""Seconds the gluster CLI waits for its glusterd in a probe (``--timeout``)."""
PROBE = commands.gluster("pool", "list", timeout=GLUSTER_TIMEOUT)


@dataclass(slots=True)
class _Record:
    failures: int = 0  # failed probes in a row
    down: bool = False
    reason: str = ""  # why the last probe failed


class NodeHealth:
    """Probes every enabled node; ``down(cluster)`` names the nodes that are down and why."""

    def __init__(
        self,
        state: DesiredState,
        executor: Executor,
        *,
        interval: float = 5.0,
        down_after: int = 2,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._state = state
        self._executor = executor
        self._interval = interval
        self._down_after = down_after
        self._clock = clock
        self._sleep = sleep
        self._timeout = GLUSTER_TIMEOUT + 3.0  # the CLI's own wait plus an SSH round trip
        self._records: dict[str, _Record] = {}  # by manage host
        self._targets: list[tuple[str, str]] = []  # (cluster, host) of the last round
        self._finished: float | None = None

    @property
    def stale_after(self) -> float:
        """Seconds after which the last round is too old to trust (a wedged prober)."""
        return 3 * self._interval + 2 * self._timeout

    async def run(self) -> None:
        """Probe forever (until cancelled)."""
        while True:
            try:
                await self.probe_once()
            except Exception:  # a bug here must not end probing; NodeCheck reports a stale round
                log.exception("node probe round crashed")
            await self._sleep(self._interval)

    async def probe_once(self) -> None:
        """One round: every enabled node of every cluster, in parallel; then the gauge."""
        targets = [
            (str(cluster.id), node.manage)
            for cluster in self._state.clusters.values()
            for node in cluster.nodes
            if node.enabled
        ]
        hosts = sorted({host for _, host in targets})
        failures = await asyncio.gather(*(self._probe(host) for host in hosts))
        records: dict[str, _Record] = {}
        for host, failure in zip(hosts, failures, strict=True):
            records[host] = self._update(host, self._records.get(host, _Record()), failure)
        self._records = records  # hosts no longer in any topology are forgotten
        self._targets = targets
        self._finished = self._clock()
        metrics.set_node_up({(cluster, host): not records[host].down for cluster, host in targets})

    def _update(self, host: str, record: _Record, failure: str | None) -> _Record:
        if failure is None:
            if record.down:
                log.info("storage node %s is up again", host)
            return _Record()
        failures = record.failures + 1
        down = record.down or failures >= self._down_after
        if down and not record.down:
            log.warning("storage node %s is down: %s", host, failure)
        elif not down:
            log.info("storage node %s failed a probe (%d of %d): %s", host, failures, self._down_after, failure)
        return _Record(failures=failures, down=down, reason=failure)

    async def _probe(self, host: str) -> str | None:
        """None when the node answered, else why it did not."""
        try:
            async with asyncio.timeout(self._timeout + 1):
                result = await self._executor.run(host, PROBE, timeout=self._timeout, check=False)
        except NodeUnreachable as e:
            return f"unreachable over SSH: {str(e).removeprefix(f'node {host} unreachable: ')}"
        except HostKeyRejected as e:
            return f"unreachable over SSH: {e}"
        except (CommandTimeout, TimeoutError):
            return f"no answer within {self._timeout:g}s"
        except ProvisionerError as e:
            return f"probe failed: {e}"
        except Exception as e:  # an untranslated transport error is still a failed probe
            log.exception("probe of %s crashed", host)
            return f"probe crashed: {type(e).__name__}: {e}"
        try:
            verdict = parse_op_result(result.stdout, result.stderr)
        except ValueError as e:  # UnparsableOutput, or a non-numeric opRet
            return f"glusterd not answering: unreadable output: {e}"
        if result.exit_status != 0 or not verdict.ok:
            return f"glusterd not answering: {verdict.message or f'exit status {result.exit_status}'}"
        return None

    # --- readers ----------------------------------------------------------------------------------

    def down(self, cluster: str) -> dict[str, str]:
        """The enabled nodes of ``cluster`` that are down: manage host -> why."""
        found = self._state.clusters.get(ClusterId(cluster))
        if found is None:
            return {}
        down = {}
        for node in found.nodes:
            record = self._records.get(node.manage)
            if node.enabled and record is not None and record.down:
                down[node.manage] = record.reason
        return down

    def nodes(self) -> Mapping[tuple[str, str], str | None]:
        """(cluster, host) of every node probed in the last round -> None when up, else why it is down."""
        return {
            (cluster, host): (record.reason if record.down else None)
            for cluster, host in self._targets
            for record in (self._records[host],)
        }

    def age(self) -> float | None:
        """Seconds since the last round finished; None before the first."""
        return None if self._finished is None else self._clock() - self._finished
