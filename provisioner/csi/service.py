"""The gRPC face of the driver: servicers that turn calls into NodeService/IdentityService calls.

Each call is timed and counted (``provisioner.csi.metrics``); a ``CsiError`` becomes its status code
and message, anything else INTERNAL with the exception's type, logged with its traceback. Secrets
and mount flags are never logged (the spec marks them sensitive); the log line of a call names the
volume id and the paths only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from provisioner.csi import metrics
from provisioner.csi.errors import CsiError
from provisioner.csi.identity import IdentityService
from provisioner.csi.node import NodeService
from provisioner.csi.proto import csi_pb2, csi_pb2_grpc, pluginregistration_pb2, pluginregistration_pb2_grpc
from provisioner.csi.registration import Registration

log = logging.getLogger(__name__)
FAULT_EXIT_CODE = 70
R = TypeVar("R")
CANNOT_MOUNT = "CannotMount"
STALE_MOUNTS = "StaleMounts"
STORAGE_REASONS = (CANNOT_MOUNT, STALE_MOUNTS)
"""The ``reason`` of NodeGetStorageHealth entries."""
Context = grpc.aio.ServicerContext[Any, Any]


async def answer(operation: str, context: Context, call: Callable[[], Awaitable[R]], *, subject: str = "") -> R:
    """Run one call, then time and count it before the caller sees its status.

    ``context.abort`` sends the status to the client before it raises here, so the metrics are
    recorded first: a client (or test) that reads them after its call returns sees its own call.
    """
    start = time.perf_counter()
    try:
        result = await call()
    except CsiError as e:
        _record(operation, e.code, start)
        log.log(
            logging.INFO if e.code is grpc.StatusCode.INVALID_ARGUMENT else logging.WARNING,
            "%s %s: %s: %s",
            operation,
            subject,
            e.code.name,
            e,
        )
        await context.abort(e.code, str(e))
        raise AssertionError("abort returned") from None  # context.abort raises
    except Exception as e:
        if isinstance(e, grpc.aio.AbortError):
            raise
        _record(operation, grpc.StatusCode.INTERNAL, start)
        log.exception("%s %s failed", operation, subject)
        await context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")
        raise AssertionError("abort returned") from None
    except BaseException:  # cancelled: the client went away; still one observed call
        _record(operation, grpc.StatusCode.CANCELLED, start)
        raise
    elapsed = _record(operation, grpc.StatusCode.OK, start)
    if operation.startswith("Node") and subject:
        log.info("%s %s: OK in %.3fs", operation, subject, elapsed)
    return result


def _record(operation: str, code: grpc.StatusCode, start: float) -> float:
    elapsed = time.perf_counter() - start
    metrics.OPERATION_SECONDS.labels(operation, "total").observe(elapsed)
    metrics.answered(operation, code)
    return elapsed


def _subject(volume_id: str, *paths: str) -> str:
    return " ".join([volume_id[:64] or "-", *(p[:256] for p in paths if p)])


class IdentityServicer(csi_pb2_grpc.IdentityServicer):
    def __init__(self, identity: IdentityService) -> None:
        self._identity = identity

    async def GetPluginInfo(
        self, request: csi_pb2.GetPluginInfoRequest, context: Context
    ) -> csi_pb2.GetPluginInfoResponse:
        return await answer("GetPluginInfo", context, _now(self._identity.plugin_info))

    async def GetPluginCapabilities(
        self, request: csi_pb2.GetPluginCapabilitiesRequest, context: Context
    ) -> csi_pb2.GetPluginCapabilitiesResponse:
        return await answer("GetPluginCapabilities", context, _now(self._identity.plugin_capabilities))

    async def Probe(self, request: csi_pb2.ProbeRequest, context: Context) -> csi_pb2.ProbeResponse:
        async def probe() -> csi_pb2.ProbeResponse:
            response, problems = self._identity.probe()
            if problems:
                log.warning("Probe: not ready: %s", "; ".join(problems))
            return response

        return await answer("Probe", context, probe)


class NodeServicer(csi_pb2_grpc.NodeServicer):
    def __init__(
        self,
        node: NodeService,
        storage_health: Callable[[], Awaitable[csi_pb2.NodeGetStorageHealthResponse]],
        *,
        exit_after_stage: bool = False,
    ) -> None:
        self._node = node
        self._storage_health = storage_health
        self._exit_after_stage = exit_after_stage

    async def NodeStageVolume(
        self, request: csi_pb2.NodeStageVolumeRequest, context: Context
    ) -> csi_pb2.NodeStageVolumeResponse:
        subject = _subject(request.volume_id, request.staging_target_path)
        response = await answer("NodeStageVolume", context, lambda: self._node.stage(request), subject=subject)
        if self._exit_after_stage:
            # Fault injection (tests only): die between stage and publish, as a killed plugin pod would,
            # a moment after the answer is on its way to kubelet.
            log.critical("fault injection: exiting after NodeStageVolume of %s", request.volume_id)
            asyncio.get_running_loop().call_later(0.2, os._exit, FAULT_EXIT_CODE)
        return response

    async def NodeUnstageVolume(
        self, request: csi_pb2.NodeUnstageVolumeRequest, context: Context
    ) -> csi_pb2.NodeUnstageVolumeResponse:
        subject = _subject(request.volume_id, request.staging_target_path)
        return await answer("NodeUnstageVolume", context, lambda: self._node.unstage(request), subject=subject)

    async def NodePublishVolume(
        self, request: csi_pb2.NodePublishVolumeRequest, context: Context
    ) -> csi_pb2.NodePublishVolumeResponse:
        subject = _subject(request.volume_id, request.target_path)
        return await answer("NodePublishVolume", context, lambda: self._node.publish(request), subject=subject)

    async def NodeUnpublishVolume(
        self, request: csi_pb2.NodeUnpublishVolumeRequest, context: Context
    ) -> csi_pb2.NodeUnpublishVolumeResponse:
        subject = _subject(request.volume_id, request.target_path)
        return await answer("NodeUnpublishVolume", context, lambda: self._node.unpublish(request), subject=subject)

    async def NodeGetVolumeStats(
        self, request: csi_pb2.NodeGetVolumeStatsRequest, context: Context
    ) -> csi_pb2.NodeGetVolumeStatsResponse:
        return await answer("NodeGetVolumeStats", context, lambda: self._node.stats(request))

    async def NodeExpandVolume(
        self, request: csi_pb2.NodeExpandVolumeRequest, context: Context
    ) -> csi_pb2.NodeExpandVolumeResponse:
        subject = _subject(request.volume_id, request.volume_path)
        return await answer("NodeExpandVolume", context, lambda: self._node.expand(request), subject=subject)

    async def NodeGetVolumeHealth(
        self, request: csi_pb2.NodeGetVolumeHealthRequest, context: Context
    ) -> csi_pb2.NodeGetVolumeHealthResponse:
        return await answer("NodeGetVolumeHealth", context, lambda: self._node.health(request))

    async def NodeGetStorageHealth(
        self, request: csi_pb2.NodeGetStorageHealthRequest, context: Context
    ) -> csi_pb2.NodeGetStorageHealthResponse:
        return await answer("NodeGetStorageHealth", context, self._storage_health)

    async def NodeGetCapabilities(
        self, request: csi_pb2.NodeGetCapabilitiesRequest, context: Context
    ) -> csi_pb2.NodeGetCapabilitiesResponse:
        return await answer("NodeGetCapabilities", context, _now(self._node.capabilities))

    async def NodeGetInfo(self, request: csi_pb2.NodeGetInfoRequest, context: Context) -> csi_pb2.NodeGetInfoResponse:
        return await answer("NodeGetInfo", context, _now(self._node.info))


class RegistrationServicer(pluginregistration_pb2_grpc.RegistrationServicer):
    def __init__(self, registration: Registration) -> None:
        self._registration = registration

    async def GetInfo(
        self, request: pluginregistration_pb2.InfoRequest, context: Context
    ) -> pluginregistration_pb2.PluginInfo:
        return self._registration.info()

    async def NotifyRegistrationStatus(
        self, request: pluginregistration_pb2.RegistrationStatus, context: Context
    ) -> pluginregistration_pb2.RegistrationStatusResponse:
        return self._registration.notify(request)


def _now(function: Callable[[], R]) -> Callable[[], Awaitable[R]]:
    async def call() -> R:
        return function()

    return call


async def storage_health(node: NodeService, identity: IdentityService) -> csi_pb2.NodeGetStorageHealthResponse:
    """NodeGetStorageHealth: the mount prerequisites and the stale staging mounts, seen from this node."""
    Health = csi_pb2.NodeGetStorageHealthResponse.StorageBackendHealth
    entries = []
    _, problems = identity.probe()
    if problems:
        entries.append(Health(status=csi_pb2.STORAGE_UNREACHABLE, reason=CANNOT_MOUNT, message="; ".join(problems)))
    stale = await node.stale_volumes()
    if stale:
        names = ", ".join(sorted(r.volume for r in stale)[:10])
        entries.append(
            Health(
                status=csi_pb2.STORAGE_DEGRADED,
                reason=STALE_MOUNTS,
                message=f"{len(stale)} staged volume(s) lost their glusterfs client: {names}",
            )
        )
    return csi_pb2.NodeGetStorageHealthResponse(backend_health=entries)
