"""A test-only CSI Controller that makes real gluster volumes, so csi-sanity can test the node plugin.

csi-sanity v5.6.0 has no node-only mode: its node tests get their volumes from ``CreateVolume`` on
the controller endpoint. The driver has no Controller service on purpose -- in production the
daemon creates volumes from Kafka requests and writes the PVs -- so this stands in for the daemon:
``CreateVolume`` creates a real replica-3 volume on the dev gluster nodes (``GlusterNodes``) and
answers with the volume id and the ``volume_context`` the daemon's PVs carry
(``provisioner.csi.attributes.volume_attributes``); ``DeleteVolume`` removes it with its bricks.
Nothing else of the Controller service is implemented, and csi-sanity's controller suites are not
run against it (``tests/integration/test_csi_sanity.py``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc

from provisioner.csi.proto import csi_pb2, csi_pb2_grpc
from tests.integration.csi_stack import GlusterNodes, GlusterVolume

log = logging.getLogger(__name__)
Context = grpc.aio.ServicerContext[Any, Any]
GiB = 1024**3


class FixtureIdentity(csi_pb2_grpc.IdentityServicer):
    async def GetPluginInfo(
        self, request: csi_pb2.GetPluginInfoRequest, context: Context
    ) -> csi_pb2.GetPluginInfoResponse:
        return csi_pb2.GetPluginInfoResponse(name="fixture-controller.gluster.test", vendor_version="0")

    async def GetPluginCapabilities(
        self, request: csi_pb2.GetPluginCapabilitiesRequest, context: Context
    ) -> csi_pb2.GetPluginCapabilitiesResponse:
        Service = csi_pb2.PluginCapability.Service
        return csi_pb2.GetPluginCapabilitiesResponse(
            capabilities=[csi_pb2.PluginCapability(service=Service(type=Service.CONTROLLER_SERVICE))]
        )

    async def Probe(self, request: csi_pb2.ProbeRequest, context: Context) -> csi_pb2.ProbeResponse:
        response = csi_pb2.ProbeResponse()
        response.ready.value = True
        return response


class FixtureController(csi_pb2_grpc.ControllerServicer):
    def __init__(self, nodes: GlusterNodes) -> None:
        self._nodes = nodes
        self._by_name: dict[str, GlusterVolume] = {}
        self._lock = asyncio.Lock()
        self.created = 0
        self.deleted = 0

    async def ControllerGetCapabilities(
        self, request: csi_pb2.ControllerGetCapabilitiesRequest, context: Context
    ) -> csi_pb2.ControllerGetCapabilitiesResponse:
        RPC = csi_pb2.ControllerServiceCapability.RPC
        return csi_pb2.ControllerGetCapabilitiesResponse(
            capabilities=[csi_pb2.ControllerServiceCapability(rpc=RPC(type=RPC.CREATE_DELETE_VOLUME))]
        )

    async def CreateVolume(
        self, request: csi_pb2.CreateVolumeRequest, context: Context
    ) -> csi_pb2.CreateVolumeResponse:
        if not request.name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "name: required")
        async with self._lock:
            volume = self._by_name.get(request.name)
            if volume is None:
                volume = await self._nodes.create_volume()
                self._by_name[request.name] = volume
                self.created += 1
                log.info(
                    "fixture controller: %s -> gluster volume %s (%s)", request.name, volume.name, volume.volume_id
                )
        size = request.capacity_range.required_bytes or GiB
        return csi_pb2.CreateVolumeResponse(
            volume=csi_pb2.Volume(volume_id=volume.volume_id, capacity_bytes=size, volume_context=volume.context)
        )

    async def DeleteVolume(
        self, request: csi_pb2.DeleteVolumeRequest, context: Context
    ) -> csi_pb2.DeleteVolumeResponse:
        async with self._lock:
            for name, volume in list(self._by_name.items()):
                if volume.volume_id == request.volume_id:
                    await self._nodes.delete_volume(volume)
                    del self._by_name[name]
                    self.deleted += 1
        return csi_pb2.DeleteVolumeResponse()

    async def delete_all(self) -> None:
        """Remove whatever csi-sanity did not delete (it stopped early, say)."""
        async with self._lock:
            for volume in self._by_name.values():
                await self._nodes.delete_volume(volume)
            self._by_name.clear()


async def serve(nodes: GlusterNodes, socket: str) -> tuple[grpc.aio.Server, FixtureController]:
    server = grpc.aio.server()
    # The generated base answers UNIMPLEMENTED for every method left out; its stubs call them abstract.
    controller = FixtureController(nodes)  # type: ignore[abstract]
    csi_pb2_grpc.add_IdentityServicer_to_server(FixtureIdentity(), server)
    csi_pb2_grpc.add_ControllerServicer_to_server(controller, server)
    server.add_insecure_port(f"unix://{socket}")
    await server.start()
    return server, controller
