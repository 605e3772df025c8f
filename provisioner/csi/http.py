"""``/metrics`` and ``/healthz`` of the node plugin (aiohttp), on ``PROVISIONER_CSI__HTTP_PORT``.

``/healthz`` is what the DaemonSet's liveness probe reads, in place of the livenessprobe sidecar,
and it checks the same thing that sidecar does: a CSI ``Probe`` call over the driver's own unix
socket, so a wedged gRPC server fails it as surely as missing prerequisites do. It also fails
when kubelet refused the registration (kubelet does not retry a refused plugin until its socket
is recreated, which a restart does). 200 ``ok``; 503 with the reason otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
from aiohttp import web
from prometheus_client import generate_latest

from provisioner.csi.proto import csi_pb2, csi_pb2_grpc

log = logging.getLogger(__name__)
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Check = Callable[[], Awaitable[str | None]]
"""A health check: None when healthy, else the reason."""


def probe_over_socket(socket_path: Path, *, timeout: float = 5.0) -> Check:
    async def check() -> str | None:
        try:
            async with grpc.aio.insecure_channel(f"unix://{socket_path}") as channel:
                response = await csi_pb2_grpc.IdentityStub(channel).Probe(csi_pb2.ProbeRequest(), timeout=timeout)
        except grpc.aio.AioRpcError as e:
            return f"Probe over {socket_path} failed: {e.code().name}: {e.details()}"
        if response.HasField("ready") and not response.ready.value:
            return "Probe: not ready (see the driver's log: mount.glusterfs or /dev/fuse missing)"
        return None

    return check


def make_app(checks: list[Check]) -> web.Application:
    async def metrics_page(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def healthz(_: web.Request) -> web.Response:
        problems = [p for p in [await check() for check in checks] if p]
        if problems:
            return web.Response(text="unhealthy\n" + "\n".join(problems) + "\n", status=503)
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(checks: list[Check], *, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(make_app(checks), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("serving /metrics and /healthz on %s:%d", host, port)
    return runner
