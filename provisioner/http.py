"""The daemon's HTTP endpoints.

* ``/metrics`` — Prometheus text format.
* ``/healthz`` — 200 while the process runs its event loop (liveness).
* ``/readyz``  — 200 only when Kafka is connected and desired state is rebuilt; 503 with the reason
  otherwise (readiness: take the pod out of rotation, do not restart it).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

Readiness = Callable[[], tuple[bool, str]]


def make_app(readiness: Readiness) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        ready, reason = readiness()
        return web.Response(text=f"{reason}\n", status=200 if ready else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def serve(readiness: Readiness, *, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(make_app(readiness), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
