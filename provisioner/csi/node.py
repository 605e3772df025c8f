"""The CSI Node service: one FUSE mount per volume per node, bind mounts into pods.

* NodeStageVolume mounts ``servers[0]:/volume`` at kubelet's staging path with the PV's vetted
  mount options and ``backup-volfile-servers=servers[1:]``. Already staged with the same volume: OK;
  the path holds something else: ALREADY_EXISTS.
* NodePublishVolume bind-mounts the staging mount at the pod's target path, and remounts the bind
  read-only when the request or the access mode says so. Publishing twice the same way: OK;
  the same target published the other way (ro vs rw) or holding another volume: ALREADY_EXISTS; a
  second target of a SINGLE_NODE_SINGLE_WRITER volume: FAILED_PRECONDITION.
* NodeUnpublishVolume / NodeUnstageVolume unmount and succeed when there is nothing to unmount.
* A mount whose glusterfs client died answers ``stat`` with ENOTCONN ("Transport endpoint is not
  connected"). NodeStage and NodePublish find that on the staging and the target path, lazily
  unmount the dead mount and mount again -- a new pod of a volume whose client died gets a working
  mount without anybody unstaging it first.
* The read-only calls (stats, expand, health) are ``provisioner.csi.inspection``'s; this class
  hands them on.

Validation comes first and touches nothing: a missing field or a relative, unnormalised or foreign
path is INVALID_ARGUMENT naming the field. A refused or failed publish leaves no directory behind,
a failed stage no mount.

Calls on one volume are serialised (kubelet may publish a volume to two pods at once); calls on
different volumes run concurrently.

Its length (over 300 lines) is the four mount calls and their idempotence cases; the read-only
calls and the validation already live apart (``inspection``, ``validation``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from provisioner.csi import attributes, metrics, options, validation
from provisioner.csi.attributes import VolumeSource
from provisioner.csi.errors import (
    AlreadyExists,
    CommandError,
    FailedPrecondition,
    InvalidArgument,
    MountFailed,
)
from provisioner.csi.events import MountEvents, PodRef
from provisioner.csi.failures import classify
from provisioner.csi.inspection import Inspector
from provisioner.csi.mounter import Mounter, PathState
from provisioner.csi.mountinfo import MountEntry
from provisioner.csi.paths import checked_path
from provisioner.csi.proto import csi_pb2
from provisioner.csi.state import StagedVolume, StateStore
from provisioner.csi.validation import Capability

log = logging.getLogger(__name__)
RPC = csi_pb2.NodeServiceCapability.RPC
LOG_TAIL = 16 * 1024
MAX_STACKED = 8  # stale mounts lazily unmounted at one path before giving up


@dataclass(frozen=True, slots=True)
class NodeConfig:
    driver_name: str
    node_id: str
    path_roots: tuple[Path, ...]
    mount_timeout: float = 60.0
    command_timeout: float = 30.0
    client_log_level: str = "INFO"
    topology_key: str = ""
    zone: str = ""


class NodeService:
    def __init__(self, config: NodeConfig, *, mounter: Mounter, state: StateStore, events: MountEvents) -> None:
        self._config = config
        self._mounter = mounter
        self._state = state
        self._events = events
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._inspector = Inspector(node_id=config.node_id, path_roots=config.path_roots, mounter=mounter, state=state)

    def set_zone(self, zone: str) -> None:
        self._config = dataclasses.replace(self._config, zone=zone)

    # ---------------------------------------------------------------- stage / unstage

    async def stage(self, request: csi_pb2.NodeStageVolumeRequest) -> csi_pb2.NodeStageVolumeResponse:
        volume_id = validation.volume_id(request.volume_id)
        staging = self._path("staging_target_path", request.staging_target_path)
        capability = validation.capability(request.volume_capability, present=request.HasField("volume_capability"))
        source = attributes.parse_volume_context(request.volume_context)
        async with self._lock(volume_id):
            await self._ensure_staged(volume_id, source, staging, capability, operation="NodeStageVolume")
        return csi_pb2.NodeStageVolumeResponse()

    async def unstage(self, request: csi_pb2.NodeUnstageVolumeRequest) -> csi_pb2.NodeUnstageVolumeResponse:
        volume_id = validation.volume_id(request.volume_id)
        staging = self._path("staging_target_path", request.staging_target_path)
        async with self._lock(volume_id):
            record = self._state.get(volume_id)
            await self._clear_stale(staging, "NodeUnstageVolume")
            entry = self._mounter.table().at(staging)
            if entry is not None:
                if not entry.is_gluster:
                    raise FailedPrecondition(f"{staging} holds a {entry.fstype} mount, not a gluster volume")
                if record is not None and entry.gluster_volume != record.volume:
                    raise FailedPrecondition(
                        f"{staging} holds gluster volume {entry.gluster_volume}, not {record.volume} of {volume_id}"
                    )
                await self._command(options.unmount(staging), "NodeUnstageVolume", "unmount")
            self._state.delete(volume_id)
        return csi_pb2.NodeUnstageVolumeResponse()

    async def _ensure_staged(
        self,
        volume_id: str,
        source: VolumeSource,
        staging: Path,
        capability: Capability,
        *,
        operation: str,
        pod: PodRef | None = None,
    ) -> MountEntry:
        """The staging mount of ``source``, mounted now if it is missing or stale."""
        state = await self._clear_stale(staging, operation)
        if state is PathState.MISSING:
            self._make_directory("staging_target_path", staging)
        elif state is PathState.NOT_DIRECTORY:
            raise InvalidArgument("staging_target_path", f"{staging} is not a directory")
        elif state is PathState.UNREADABLE:
            raise FailedPrecondition(f"{staging} cannot be read (a hung mount?); unstage it first")
        entry = self._mounter.table().at(staging)
        if entry is not None:
            if entry.is_gluster and entry.gluster_volume == source.volume and entry.root == "/":
                self._remember(volume_id, source, staging, capability)
                return entry
            raise AlreadyExists(
                f"staging_target_path {staging} already holds {entry.fstype} {entry.source}, not volume {source.volume}"
            )
        log_file = self._state.log_file(volume_id)
        self._mounter.remove_file(log_file)  # the log then holds this attempt only
        argv = options.fuse_mount(
            source,
            staging,
            options.client_options(
                source,
                capability.options,
                read_only=capability.read_only,
                log_file=log_file,
                log_level=self._config.client_log_level,
            ),
        )
        with metrics.timed(operation, "mount"):
            result = await self._mounter.run(argv, timeout=self._config.mount_timeout)
        mounted = self._mounter.table().at(staging)
        if not result.ok or mounted is None or not mounted.is_gluster:
            if mounted is not None and mounted.is_gluster:
                # It mounted after all (the command timed out after the mount), or mounted and is going
                # away by itself (the client gave up on the volfile): not half a success either way.
                await self._undo(staging, operation)
            failure = classify(
                output=result.output,
                log=self._mounter.read_tail(log_file, LOG_TAIL),
                servers=source.servers,
                timed_out=result.timed_out,
                exit_status=result.exit_status,
            )
            metrics.mount_failed(failure.reason)
            await self._events.mount_failed(volume_id, source.volume, failure, pod=pod)
            raise MountFailed(
                f"mounting {source.spec} at {staging} failed: {failure.describe()} [{failure.reason}]"
                + (f"; {failure.detail}" if failure.detail else ""),
                failure_reason=failure.reason,
                server=failure.server,
            )
        log.info("staged %s (%s) at %s", source.spec, volume_id, staging)
        self._remember(volume_id, source, staging, capability)
        return mounted

    def _remember(self, volume_id: str, source: VolumeSource, staging: Path, capability: Capability) -> None:
        record = StagedVolume(
            volume_id=volume_id,
            volume=source.volume,
            servers=source.servers,
            staging_path=str(staging),
            read_only=capability.read_only,
            options=capability.options.options,
        )
        if self._state.get(volume_id) != record:  # every publish passes here: write only what changed
            self._state.put(record)

    # ---------------------------------------------------------------- publish / unpublish

    async def publish(self, request: csi_pb2.NodePublishVolumeRequest) -> csi_pb2.NodePublishVolumeResponse:
        volume_id = validation.volume_id(request.volume_id)
        target = self._path("target_path", request.target_path)
        if not request.staging_target_path:
            raise InvalidArgument("staging_target_path", "required: the driver stages volumes (STAGE_UNSTAGE_VOLUME)")
        staging = self._path("staging_target_path", request.staging_target_path)
        if target == staging or target.is_relative_to(staging) or staging.is_relative_to(target):
            raise InvalidArgument("target_path", "must not be the staging path, nor inside it or around it")
        capability = validation.capability(request.volume_capability, present=request.HasField("volume_capability"))
        source = attributes.parse_volume_context(request.volume_context)
        read_only = request.readonly or capability.read_only
        pod = _pod(request.volume_context)
        operation = "NodePublishVolume"
        async with self._lock(volume_id):
            try:
                staged = await self._ensure_staged(volume_id, source, staging, capability, operation=operation, pod=pod)
            except AlreadyExists as e:
                raise FailedPrecondition(f"staging_target_path: {e}") from e
            state = await self._clear_stale(target, operation)
            if state is PathState.NOT_DIRECTORY:
                raise InvalidArgument("target_path", f"{target} exists and is not a directory")
            if state is PathState.UNREADABLE:
                raise FailedPrecondition(f"{target} cannot be read (a hung mount?); unpublish it first")
            table = self._mounter.table()
            existing = table.at(target)
            if existing is not None:
                if existing.device == staged.device and existing.fstype == staged.fstype:
                    if existing.read_only == read_only:
                        return csi_pb2.NodePublishVolumeResponse()
                    was = "read-only" if existing.read_only else "read-write"
                    raise AlreadyExists(f"target_path {target} is already published {was}")
                raise AlreadyExists(f"target_path {target} already holds {existing.fstype} {existing.source}")
            if capability.single_writer:
                others = [
                    e.mount_point
                    for e in table.same_superblock(staged)
                    if e.mount_point not in (str(staging), str(target))
                ]
                if others:
                    raise FailedPrecondition(
                        f"volume {volume_id} is SINGLE_NODE_SINGLE_WRITER and already published at {others[0]}"
                    )
            # Every check passed: only now does the target directory appear, and it goes again
            # if the bind fails, so a refused or failed publish leaves nothing behind.
            created = state is PathState.MISSING
            if created:
                self._make_directory("target_path", target)
            try:
                await self._bind(staging, target, read_only=read_only, operation=operation)
            except BaseException:
                if created and self._mounter.table().at(target) is None:
                    with contextlib.suppress(OSError):
                        self._mounter.remove_directory(target)
                raise
        log.info("published %s at %s%s", volume_id, target, " read-only" if read_only else "")
        return csi_pb2.NodePublishVolumeResponse()

    async def _bind(self, staging: Path, target: Path, *, read_only: bool, operation: str) -> None:
        await self._command(options.bind_mount(staging, target), operation, "bind")
        if read_only:
            try:
                await self._command(options.remount_read_only(target), operation, "remount_ro")
            except CommandError:
                # Never leave a writable bind behind a read-only request.
                await self._command(options.unmount(target, lazy=True), operation, "unmount")
                raise
            entry = self._mounter.table().at(target)
            if entry is None or not entry.read_only:
                await self._command(options.unmount(target, lazy=True), operation, "unmount")
                raise FailedPrecondition(f"{target} did not become read-only after the remount")

    async def unpublish(self, request: csi_pb2.NodeUnpublishVolumeRequest) -> csi_pb2.NodeUnpublishVolumeResponse:
        volume_id = validation.volume_id(request.volume_id)
        target = self._path("target_path", request.target_path)
        async with self._lock(volume_id):
            state = await self._clear_stale(target, "NodeUnpublishVolume")
            entry = self._mounter.table().at(target)
            if entry is not None:
                if not entry.is_gluster:
                    raise FailedPrecondition(f"{target} holds a {entry.fstype} mount, not a gluster volume")
                await self._command(options.unmount(target), "NodeUnpublishVolume", "unmount")
                state = await self._mounter.probe(target)
            if state is PathState.DIRECTORY:
                try:
                    self._mounter.remove_directory(target)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    raise FailedPrecondition(f"cannot remove {target}: {e.strerror or e}") from e
        return csi_pb2.NodeUnpublishVolumeResponse()

    # ---------------------------------------------------------------- the read-only calls

    async def stats(self, request: csi_pb2.NodeGetVolumeStatsRequest) -> csi_pb2.NodeGetVolumeStatsResponse:
        return await self._inspector.stats(request)

    async def expand(self, request: csi_pb2.NodeExpandVolumeRequest) -> csi_pb2.NodeExpandVolumeResponse:
        return await self._inspector.expand(request)

    async def health(self, request: csi_pb2.NodeGetVolumeHealthRequest) -> csi_pb2.NodeGetVolumeHealthResponse:
        return await self._inspector.health(request)

    async def stale_volumes(self) -> list[StagedVolume]:
        return await self._inspector.stale_volumes()

    # ---------------------------------------------------------------- capabilities / info

    def capabilities(self) -> csi_pb2.NodeGetCapabilitiesResponse:
        kinds = (
            RPC.STAGE_UNSTAGE_VOLUME,
            RPC.GET_VOLUME_STATS,
            RPC.EXPAND_VOLUME,
            RPC.SINGLE_NODE_MULTI_WRITER,
            RPC.GET_VOLUME_HEALTH,
            RPC.GET_STORAGE_HEALTH,
        )
        return csi_pb2.NodeGetCapabilitiesResponse(
            capabilities=[csi_pb2.NodeServiceCapability(rpc=RPC(type=kind)) for kind in kinds]
        )

    def info(self) -> csi_pb2.NodeGetInfoResponse:
        response = csi_pb2.NodeGetInfoResponse(node_id=self._config.node_id, max_volumes_per_node=0)
        if self._config.zone:
            response.accessible_topology.segments[self._config.topology_key] = self._config.zone
        return response

    @property
    def zone(self) -> str:
        return self._config.zone

    # ---------------------------------------------------------------- helpers

    def _path(self, field: str, value: str) -> Path:
        return checked_path(field, value, self._config.path_roots)

    @asynccontextmanager
    async def _lock(self, volume_id: str) -> AsyncIterator[None]:
        """One call at a time per volume; the lock is dropped when nobody holds or waits for it."""
        lock, users = self._locks.get(volume_id, (asyncio.Lock(), 0))
        self._locks[volume_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[volume_id]
            if users == 1:
                del self._locks[volume_id]
            else:
                self._locks[volume_id] = (lock, users - 1)

    async def _clear_stale(self, path: Path, operation: str) -> PathState:
        """The state of ``path``; a stale FUSE mount there is lazily unmounted first (then re-probed)."""
        state = await self._mounter.probe(path)
        for _ in range(MAX_STACKED):
            if state is not PathState.STALE:
                break
            log.warning("%s: stale mount at %s (Transport endpoint is not connected); unmounting it", operation, path)
            await self._command(options.unmount(path, lazy=True), operation, "stale_unmount")
            metrics.stale_repaired()
            state = await self._mounter.probe(path)
        return state

    def _make_directory(self, field: str, path: Path) -> None:
        try:
            self._mounter.make_directory(path)
        except FileExistsError:
            pass
        except FileNotFoundError as e:
            raise FailedPrecondition(f"{field}: the parent directory of {path} does not exist") from e
        except OSError as e:
            raise FailedPrecondition(f"{field}: cannot create {path}: {e.strerror or e}") from e

    async def _undo(self, path: Path, operation: str) -> None:
        """Unmount a mount that must not stay; one that vanished meanwhile is just as good."""
        try:
            await self._command(options.unmount(path, lazy=True), operation, "unmount")
        except CommandError:
            if self._mounter.table().at(path) is not None:
                raise

    async def _command(self, argv: options.Argv, operation: str, step: str) -> None:
        with metrics.timed(operation, step):
            result = await self._mounter.run(argv, timeout=self._config.command_timeout)
        if not result.ok:
            detail = "timed out" if result.timed_out else f"exit {result.exit_status}: {result.output.strip()[-300:]}"
            raise CommandError(argv, detail)


def _pod(context: Mapping[str, str]) -> PodRef | None:
    name, namespace = context.get(attributes.POD_NAME), context.get(attributes.POD_NAMESPACE)
    return PodRef(namespace=namespace, name=name) if name and namespace else None
