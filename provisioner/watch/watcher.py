"""``provisioner watch``: claims in the cluster become requests on Kafka.

- A pending claim whose StorageClass names our provisioner becomes a provision request (after a gid
  from the class's range is reserved on the claim itself, so a restarted watcher reuses it).
- A PV of ours that turns Released under policy Delete becomes a delete request; the daemon removes
  the storage first, then the PV, Endpoints and Service.
- A bound claim that asks for more than its PV has becomes an expand request.

Only the holder of the Lease acts; a standby takes over when it expires. Requests are derived from
object uids (``kube.claims``), so a resend (restart, resync, a second watcher) is harmless: the
daemon answers it idempotently. Every ``kubernetes.resync`` seconds both lists are walked again, which
is also how a failed provision is retried.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import uuid

from kubernetes_asyncio import client

from provisioner import metrics
from provisioner.bus.client import RequestSender
from provisioner.bus.topics import ensure_topics
from provisioner.events.envelope import Event
from provisioner.kube.api import new_client
from provisioner.observe.http import serve
from provisioner.settings import Settings
from provisioner.watch.bridge import ClaimBridge
from provisioner.watch.informer import Informer, api_source
from provisioner.watch.lease import LeaderLease

log = logging.getLogger(__name__)


async def run(settings: Settings) -> None:
    """The watcher process: campaign for the Lease; while leading, list/watch and send requests."""
    kube = settings.kubernetes
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    api = await new_client(kube)
    sender = RequestSender(settings.kafka)
    await ensure_topics(settings.kafka)
    await sender.start()
    identity = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    lease = LeaderLease(
        api,
        namespace=kube.namespace,
        name=kube.provisioner_name.replace("/", "-").replace(".", "-") + "-watch",
        identity=identity,
        duration=kube.lease_duration,
    )
    runner = (
        await serve(
            lambda: (True, "leading" if lease.leading.is_set() else "standby"),
            host=settings.http.host,
            port=settings.http.port,
        )
        if settings.http.port
        else None
    )
    campaign = asyncio.create_task(lease.hold(), name="lease")
    log.info("watching claims for provisioner %s as %s", kube.provisioner_name, identity)
    try:
        while not stop.is_set():
            if not await _until(lease.leading, stop):
                break
            metrics.WATCH_LEADER.set(1)
            try:
                await _lead(api, sender, settings, lease, stop)
            finally:
                metrics.WATCH_LEADER.set(0)
    finally:
        campaign.cancel()
        await lease.release()
        await sender.stop()
        if runner is not None:
            await runner.cleanup()
        await api.close()
        log.info("stopped")


async def _lead(
    api: client.ApiClient, sender: RequestSender, settings: Settings, lease: LeaderLease, stop: asyncio.Event
) -> None:
    """Act until the Lease is lost or a stop is asked for; a fresh bridge each term (state from the lists)."""

    async def send(event: Event, key: str) -> None:
        await sender.send(event, key=key)

    bridge = ClaimBridge(api, send, settings)
    core = client.CoreV1Api(api)
    resync = settings.kubernetes.resync
    volumes = Informer(
        api_source("persistentvolumes", core.list_persistent_volume),
        on_list=bridge.volumes_listed,
        on_event=bridge.volume_changed,
        resync=resync,
    )
    claims_informer = Informer(
        api_source("persistentvolumeclaims", core.list_persistent_volume_claim_for_all_namespaces),
        on_list=bridge.claims_listed,
        on_event=bridge.claim_changed,
        resync=resync,
    )
    tasks = [asyncio.create_task(volumes.run(), name="watch-pvs")]
    try:
        await _first(volumes.synced, stop, lease.lost)  # PVs (and their gids) first: claims are judged against them
        if not volumes.synced.is_set():
            return
        tasks.append(asyncio.create_task(claims_informer.run(), name="watch-claims"))
        ended = asyncio.create_task(_first(stop, lease.lost))
        done, _ = await asyncio.wait([ended, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not ended and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        ended.cancel()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _until(event: asyncio.Event, stop: asyncio.Event) -> bool:
    """Wait for ``event``; False if ``stop`` came first."""
    await _first(event, stop)
    return event.is_set() and not stop.is_set()


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
