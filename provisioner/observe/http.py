"""The daemon's HTTP endpoints and the readiness checks behind ``/readyz``.

Served on ``PROVISIONER_HTTP__HOST``:``PROVISIONER_HTTP__PORT`` (default ``0.0.0.0:9464``; port 0
turns the server off):

* ``GET /metrics`` — Prometheus text format 0.0.4: every ``provisioner_*`` series plus the client's
  ``process_*`` and ``python_*`` ones. Scraping is cheap (capacity is computed from memory).
* ``GET /healthz`` — liveness: 200 ``ok`` whenever the event loop answers. It checks nothing else,
  so a broker outage never gets the daemon restarted.
* ``GET /readyz`` — readiness: 200 when every check passed at its last run, else 503; the body has
  one line per check with its detail or the reason it failed, e.g.::

      not ready
      kafka: failed: Kafka at 127.0.0.1:19092 does not answer: KafkaError(...)
      state: ok: 1 cluster(s), 4 volume(s)
      nodes: ok: 3/3 nodes up

The checks run in the background every ``interval`` seconds (every ``retry_interval`` while one
fails) with a ``timeout`` each, so a request to ``/readyz`` never waits on Kafka or SSH. Results
older than ``stale_after`` count as failed: a wedged checker is not a ready daemon.

* ``kafka``: the consumer has joined its group and a metadata round trip to the brokers succeeds
  (aiokafka itself retries silently, so only a real request shows the broker is gone); the same
  run records the consumer lag per assigned partition.
* ``state``: the desired state has been rebuilt from the state topic (the server starts before
  Kafka answers, so an outage at start-up reads as not ready, not as a crash loop).
* ``nodes``: reads the node prober (``provisioner.health.NodeHealth``, which also keeps the
  ``provisioner_node_up`` gauge the NodeUnreachable alert watches); the check fails when a
  cluster has no node up (the gluster CLI needs one), before the first probe round, and when the
  last round is too old (a wedged prober).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web
from prometheus_client import generate_latest

from provisioner import metrics
from provisioner.errors import ProvisionerError, TemporaryError
from provisioner.state import DesiredState

log = logging.getLogger(__name__)

# What generate_latest() writes (classic names); newer clients call it "version=1.0.0" by default.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Status = Callable[[], tuple[bool, str]]
Check = Callable[[], Awaitable[str]]
"""A readiness check: returns a short detail when it passes, raises ProvisionerError when not."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    detail: str
    at: float


class Readiness:
    def __init__(
        self,
        checks: Mapping[str, Check],
        *,
        interval: float = 5.0,
        retry_interval: float = 1.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._checks = dict(checks)
        self._interval = interval
        self._retry_interval = retry_interval
        self._timeout = timeout
        self._clock = clock
        self._stale_after = 3 * interval + 2 * timeout
        self._results: dict[str, CheckResult] = {}

    async def check_once(self) -> bool:
        names = list(self._checks)
        outcomes = await asyncio.gather(*(self._run(name) for name in names))
        now = self._clock()
        for name, (ok, detail) in zip(names, outcomes, strict=True):
            previous = self._results.get(name)
            if previous is not None and previous.ok != ok:
                log.log(logging.INFO if ok else logging.WARNING, "readiness check %s: %s", name, detail)
            self._results[name] = CheckResult(ok, detail, now)
        metrics.set_ready({name: ok for name, (ok, _) in zip(names, outcomes, strict=True)})
        return all(ok for ok, _ in outcomes)

    async def _run(self, name: str) -> tuple[bool, str]:
        try:
            async with asyncio.timeout(self._timeout):
                return True, await self._checks[name]()
        except TimeoutError:
            return False, f"no answer within {self._timeout:g}s"
        except ProvisionerError as e:
            return False, str(e)
        except Exception as e:  # a check that crashes is a failed check, not a dead checker
            log.exception("readiness check %s crashed", name)
            return False, f"check crashed: {type(e).__name__}: {e}"

    async def run(self) -> None:
        """Check forever (until cancelled)."""
        while True:
            ready = await self.check_once()
            await asyncio.sleep(self._interval if ready else self._retry_interval)

    def status(self) -> tuple[bool, str]:
        now = self._clock()
        lines = []
        ready = bool(self._checks)
        for name in self._checks:
            result = self._results.get(name)
            if result is None:
                ok, detail = False, "not checked yet"
            elif now - result.at > self._stale_after:
                ok, detail = False, f"last result is {now - result.at:.0f}s old: {result.detail}"
            else:
                ok, detail = result.ok, result.detail
            ready = ready and ok
            lines.append(f"{name}: {'ok' if ok else 'failed'}: {detail}")
        return ready, "\n".join(["ready" if ready else "not ready", *lines])


class KafkaCheck:
    """Runs the consumer's broker round trip and publishes the lag it measured."""

    def __init__(self, broker_lag: Callable[[], Awaitable[Mapping[int, int]]], *, topic: str) -> None:
        self._broker_lag = broker_lag
        self._topic = topic

    async def __call__(self) -> str:
        lag = await self._broker_lag()
        metrics.set_consumer_lag(self._topic, lag)
        return f"{len(lag)} partition(s) of {self._topic} assigned, lag {sum(lag.values())}"


class StateCheck:
    """Passes once the desired state was rebuilt from the state topic (the daemon serves before that)."""

    def __init__(self, state: DesiredState) -> None:
        self._state = state
        self.rebuilt = False

    async def __call__(self) -> str:
        if not self.rebuilt:
            raise TemporaryError("the desired state is not rebuilt from the state topic yet")
        return f"{len(self._state.clusters)} cluster(s), {len(self._state.volumes)} volume(s)"


class NodeView(Protocol):
    """What the node prober knows (``provisioner.health.NodeHealth``)."""

    def nodes(self) -> Mapping[tuple[str, str], str | None]:
        """(cluster, host) of every probed node -> None when up, else why it is down."""
        ...

    def age(self) -> float | None:
        """Seconds since the last probe round finished; None before the first."""
        ...


class NodeCheck:
    """Readiness from the node prober's last round: it never runs a command of its own."""

    def __init__(self, health: NodeView, *, stale_after: float) -> None:
        self._health = health
        self._stale_after = stale_after

    async def __call__(self) -> str:
        age = self._health.age()
        if age is None:
            raise TemporaryError("nodes not probed yet")
        if age > self._stale_after:
            raise TemporaryError(f"the last node probe round finished {age:.0f}s ago")
        nodes = self._health.nodes()
        clusters = sorted({cluster for cluster, _ in nodes})
        dead = [c for c in clusters if all(why is not None for (cluster, _), why in nodes.items() if cluster == c)]
        down = {host: why for (_, host), why in sorted(nodes.items()) if why is not None}
        detail = f"{len(nodes) - sum(1 for why in nodes.values() if why is not None)}/{len(nodes)} nodes up"
        if down:
            detail += "; down: " + ", ".join(f"{host} ({why})" for host, why in down.items())
        if dead:
            raise TemporaryError(f"no node of cluster(s) {', '.join(dead)} is up; {detail}")
        return detail


def make_app(status: Status) -> web.Application:
    async def metrics_page(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        ready, text = status()
        return web.Response(text=f"{text}\n", status=200 if ready else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def serve(status: Status, *, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(make_app(status), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
