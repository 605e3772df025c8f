"""Wiring of the node plugin: ``run(settings)`` serves until SIGTERM/SIGINT or cancellation.

Start order: state directory, Kubernetes client (only with events on; it also reads the zone
label), the CSI socket (Identity + Node), the HTTP server, and last the registration socket -- kubelet
dials the CSI socket as soon as it sees the registration socket, so that one must already answer.
Shutdown goes the other way: the registration socket first (kubelet deregisters the driver), then
in-flight CSI calls get ``SHUTDOWN_GRACE`` seconds, then the sockets are removed. Mounts stay: they
belong to pods, and the next driver process picks them up from the mount table and its records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import stat
from pathlib import Path

import grpc

from provisioner.csi import http
from provisioner.csi.events import Cluster, KubernetesCluster, MountEvents
from provisioner.csi.identity import IdentityService, Prerequisites
from provisioner.csi.mounter import SystemMounter
from provisioner.csi.node import NodeConfig, NodeService
from provisioner.csi.proto import csi_pb2_grpc, pluginregistration_pb2_grpc
from provisioner.csi.registration import Registration
from provisioner.csi.service import IdentityServicer, NodeServicer, RegistrationServicer, storage_health
from provisioner.csi.settings import CsiSettings
from provisioner.csi.state import StateStore
from provisioner.errors import ConfigError

log = logging.getLogger(__name__)
SHUTDOWN_GRACE = 10.0


async def run(settings: CsiSettings, *, stop: asyncio.Event | None = None) -> None:
    """Serve the CSI node plugin until ``stop`` is set, a SIGTERM/SIGINT arrives, or the task is cancelled."""
    stop = stop or asyncio.Event()
    _handle_signals(stop)
    state = StateStore(settings.state_path)
    state.ensure()
    cluster = await _cluster(settings)
    node = NodeService(
        NodeConfig(
            driver_name=settings.driver_name,
            node_id=settings.node_id,
            path_roots=settings.path_roots,
            mount_timeout=settings.mount_timeout,
            command_timeout=settings.command_timeout,
            client_log_level=settings.client_log_level,
            topology_key=settings.topology_key,
            zone=settings.zone,
        ),
        mounter=SystemMounter(stat_timeout=settings.stat_timeout),
        state=state,
        events=MountEvents(cluster, driver=settings.driver_name, node_id=settings.node_id),
    )
    if cluster is not None and not settings.zone:
        node.set_zone(await _zone(cluster, settings))
    identity = IdentityService(
        driver_name=settings.driver_name, prerequisites=Prerequisites(), has_zone=lambda: bool(node.zone)
    )
    registration = Registration(settings.driver_name, endpoint=str(settings.socket_path))

    csi_server = grpc.aio.server()
    csi_pb2_grpc.add_IdentityServicer_to_server(IdentityServicer(identity), csi_server)
    csi_pb2_grpc.add_NodeServicer_to_server(
        NodeServicer(node, lambda: storage_health(node, identity), exit_after_stage=settings.exit_after_stage),
        csi_server,
    )
    registration_server: grpc.aio.Server | None = None
    runner = None
    try:
        await _listen(csi_server, settings.socket_path)
        _, problems = identity.probe()
        log.info(
            "CSI driver %s on node %s serving %s%s",
            settings.driver_name,
            settings.node_id,
            settings.socket_path,
            f" (not ready: {'; '.join(problems)})" if problems else "",
        )
        if settings.http_port:
            checks = [http.probe_over_socket(settings.socket_path), _registration_check(registration)]
            runner = await http.serve(checks, host=settings.http_host, port=settings.http_port)
        if settings.registration:
            registration_server = grpc.aio.server()
            pluginregistration_pb2_grpc.add_RegistrationServicer_to_server(
                RegistrationServicer(registration), registration_server
            )
            await _listen(registration_server, settings.registration_path)
            log.info("plugin registration socket %s", settings.registration_path)
        await stop.wait()
        log.info("stopping the CSI driver")
    finally:
        if registration_server is not None:
            _remove_socket(settings.registration_path)
            await registration_server.stop(0)
        await csi_server.stop(SHUTDOWN_GRACE)
        _remove_socket(settings.socket_path)
        if runner is not None:
            await runner.cleanup()
        if isinstance(cluster, KubernetesCluster):
            await cluster.close()


async def _listen(server: grpc.aio.Server, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_socket(path)  # a socket left by a killed predecessor would make the bind fail
    if server.add_insecure_port(f"unix://{path}") == 0:
        raise ConfigError(f"cannot listen on unix socket {path}")
    await server.start()


def _remove_socket(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
        else:
            raise ConfigError(f"{path} exists and is not a socket; not removing it")


async def _cluster(settings: CsiSettings) -> Cluster | None:
    if not settings.kubernetes_events:
        return None
    try:
        return await KubernetesCluster.connect(
            str(settings.kubeconfig) if settings.kubeconfig else None, timeout=settings.api_timeout
        )
    except Exception as e:
        raise ConfigError(f"PROVISIONER_CSI__KUBECONFIG: cannot set up the Kubernetes client: {e}") from e


async def _zone(cluster: Cluster, settings: CsiSettings) -> str:
    try:
        zone = await cluster.node_label(settings.node_id, settings.zone_node_label) or ""
    except Exception as e:  # noqa: BLE001 -- no zone is a valid answer: the node then reports no topology
        log.warning("cannot read label %s of node %s: %s", settings.zone_node_label, settings.node_id, e)
        return ""
    log.info("zone of node %s: %s", settings.node_id, zone or "(none)")
    return zone


def _registration_check(registration: Registration) -> http.Check:
    async def check() -> str | None:
        if registration.registered is False:
            return f"kubelet refused the registration: {registration.error}"
        return None

    return check


def _handle_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
