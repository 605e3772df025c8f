"""Wiring of the daemon and its staged shutdown.

Start: HTTP endpoints (not ready yet) → topics → state rebuilt from the state topic → consumer
group; while Kafka does not answer, the daemon waits for it (and says why on /readyz) instead of
exiting. Stop (SIGTERM
or SIGINT): stop fetching, give in-flight requests ``worker.shutdown_grace`` seconds, commit what
finished, close producers, consumer, SSH connections. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable

from provisioner.bus.consumer import RequestLoop
from provisioner.bus.state_topic import StateTopicReader
from provisioner.bus.topics import ensure_topics
from provisioner.errors import KafkaUnavailable
from provisioner.executor import Executor
from provisioner.executor.alternates import AlternateHosts
from provisioner.executor.fault import Countdown, CrashAfter
from provisioner.executor.measured import MeasuredExecutor
from provisioner.executor.ssh import ssh_executor
from provisioner.handling.dispatch import RequestHandler
from provisioner.kube.api import new_client
from provisioner.kube.objects import KubeObjects
from provisioner.observe.capacity import CapacityCollector
from provisioner.observe.health import NodeHealth
from provisioner.observe.http import KafkaCheck, NodeCheck, Readiness, StateCheck, serve
from provisioner.planning.placement import ObservedSpace
from provisioner.reconcile.inventory import NodeInventory
from provisioner.reconcile.runs import PeriodicReconciler
from provisioner.settings import Settings
from provisioner.state import DesiredState
from provisioner.storage.operations import VolumeOperations

log = logging.getLogger(__name__)


async def run(settings: Settings) -> None:
    stop = asyncio.Event()
    _install_signal_handlers(stop)
    state = DesiredState()
    executor: Executor = AlternateHosts(MeasuredExecutor(ssh_executor(settings)), state.manage_alternates)
    countdown = Countdown(settings.worker.crash_after) if settings.worker.crash_after else None
    if countdown is not None:
        log.warning("crash injection armed: %s", settings.worker.crash_after)
        executor = CrashAfter(executor, countdown)
    observed = ObservedSpace()  # the devices' room as the nodes report it, refreshed by reconcile passes
    reader = StateTopicReader(settings.kafka, state)
    kube = await new_client(settings.kubernetes) if settings.kubernetes.enabled else None
    claims = (
        KubeObjects(kube, provisioner=settings.kubernetes.provisioner_name, timeout=settings.kubernetes.api_timeout)
        if kube is not None
        else None
    )
    operations = VolumeOperations(executor, settings.storage, owner=settings.kafka.state_topic)
    # own connections: busy nodes still answer probes
    probes = AlternateHosts(MeasuredExecutor(ssh_executor(settings)), state.manage_alternates)
    health = NodeHealth(state, probes, interval=settings.worker.health_interval)
    handler = RequestHandler(state, operations, settings, objects=claims, health=health, observed=observed)

    drift = PeriodicReconciler(
        state,
        NodeInventory(executor, operations, timeout=settings.storage.command_timeout),
        owner=operations.owner,
        repair=settings.worker.reconcile_repair,
        owns=lambda cluster: loop.owns(cluster),  # the loop is made just below
        catch_up=reader.catch_up,
        observed=observed,
    )
    loop = RequestLoop(
        settings.kafka,
        reader,
        handler.handle,
        handler.keys_of,
        max_in_flight=settings.worker.max_in_flight,
        grace=settings.worker.shutdown_grace,
        on_assigned=drift.kick,  # a pass when partitions (clusters) come to this daemon
        passed=countdown.passed if countdown is not None else None,
    )

    state_check = StateCheck(state)
    readiness = Readiness(
        {
            "kafka": KafkaCheck(loop.broker_lag, topic=settings.kafka.requests_topic),
            "state": state_check,
            "nodes": NodeCheck(health, stale_after=health.stale_after),
        }
    )
    checks = asyncio.create_task(readiness.run(), name="readiness")
    runner = (
        await serve(readiness.status, host=settings.http.host, port=settings.http.port) if settings.http.port else None
    )
    if runner is not None:
        log.info("serving /metrics /healthz /readyz on %s:%d", settings.http.host, settings.http.port)

    async def rebuild() -> None:
        await ensure_topics(settings.kafka)
        if not reader.started:
            await reader.start()
        records = await reader.catch_up()
        log.info("state rebuilt: %d records, %d clusters, %d volumes", records, len(state.clusters), len(state.volumes))

    capacity = None
    probing = reconciling = None
    try:
        if not await _until_kafka_answers(rebuild, stop, what="rebuild the desired state"):
            return
        state_check.rebuilt = True
        capacity = CapacityCollector.register(state, observed=observed)
        probing = asyncio.create_task(health.run(), name="node-health")
        interval = settings.worker.reconcile_interval
        reconciling = asyncio.create_task(drift.every(interval), name="reconcile") if interval else None
        await _until_kafka_answers(lambda: loop.run(stop), stop, what="join the consumer group")
    finally:
        for task in (checks, probing, reconciling):
            if task is not None:
                task.cancel()
        if capacity is not None:
            capacity.unregister()
        if runner is not None:
            await runner.cleanup()
        await reader.stop()
        await executor.close()
        await probes.close()
        if kube is not None:
            await kube.close()
        log.info("stopped")


async def _until_kafka_answers(attempt: Callable[[], Awaitable[None]], stop: asyncio.Event, *, what: str) -> bool:
    """Run ``attempt`` until Kafka lets it through (the daemon waits for its broker rather than exit);
    False when a stop was asked for first."""
    delay = 0.5
    while not stop.is_set():
        try:
            await attempt()
        except KafkaUnavailable as e:
            log.warning("cannot %s yet (%s); trying again in %.1fs", what, e, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 10.0)
        else:
            return True
    return False


def _install_signal_handlers(stop: asyncio.Event) -> None:
    event_loop = asyncio.get_running_loop()

    def on_signal(signame: str) -> None:
        if stop.is_set():
            log.warning("second %s: exiting now", signame)
            os._exit(130)
        log.info("%s: stopping (send again to exit at once)", signame)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        event_loop.add_signal_handler(sig, on_signal, sig.name)
