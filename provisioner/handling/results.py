"""The result and progress events of requests, each built once from the domain objects.

A success carries what the requester needs to use the volume (``VolumeOut``: bricks, mount source,
backup volfile servers); a failure carries a stable reason code and a bounded message. Node output
can be large (a gluster error, a stack of mkfs messages), so messages are cut to
``MESSAGE_LIMIT`` characters here, and the full text goes to the daemon's log instead.
"""

from __future__ import annotations

import logging

from provisioner.delivery.outcome import Outcome
from provisioner.domain import Cluster, Volume, brick_mount_point
from provisioner.errors import ProvisionerError, TemporaryError
from provisioner.events import catalog, models, results
from provisioner.events.envelope import Event, new_event
from provisioner.state import StateChange
from provisioner.storage.operations import mount_source

log = logging.getLogger(__name__)
MESSAGE_LIMIT = models.MESSAGE_LIMIT


def bounded(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    note = f" … [{len(text) - limit + 40} more characters in the daemon's log]"
    return text[: limit - len(note)] + note


def volume_out(cluster: Cluster, volume: Volume) -> results.VolumeOut:
    mount, backups = mount_source(cluster, volume)
    bricks = []
    for brick in volume.bricks:
        node = cluster.node(brick.node)
        bricks.append(
            results.BrickOut(
                id=brick.id,
                node=brick.node,
                host=node.storage,
                path=f"{brick_mount_point(cluster.brick_root, brick.device, brick.id)}/brick",
                device=brick.device,
                size=brick.size,
                arbiter=brick.arbiter,
            )
        )
    return results.VolumeOut(
        cluster=volume.cluster,
        volume_id=volume.id,
        name=volume.name,
        size=volume.size,
        durability=models.durability_spec(volume.durability),
        bricks=bricks,
        mount=mount,
        backup_servers=backups,
        gid=volume.gid,
    )


def succeeded(
    request: Event,
    data: models.Model,
    *,
    key: str,
    subject: str | None,
    source: str,
    changes: tuple[StateChange, ...] = (),
) -> Outcome:
    result = new_event(catalog.succeeded_type(request.type), data, source=source, subject=subject)
    return Outcome(result=result, key=key, changes=changes)


def failed(
    request: Event,
    error: ProvisionerError,
    *,
    cluster: str | None,
    volume: str | None,
    source: str,
    note: str = "",
    changes: tuple[StateChange, ...] = (),
) -> Outcome:
    """The failure result of ``request``: the error's reason, its message (bounded), retriable or not."""
    message = str(error) + note
    if len(message) > MESSAGE_LIMIT:
        log.warning("request %s failed (%s); the full message: %s", request.id, error.reason, message)
    data = results.RequestFailed(
        request_id=request.id,
        cluster=cluster,
        volume_id=volume,
        reason=error.reason,
        message=bounded(message),
        retriable=isinstance(error, TemporaryError),
    )
    result = new_event(catalog.failed_type(request.type), data, source=source, subject=volume)
    return Outcome(result=result, key=volume or cluster or "", changes=changes)


def progress(request: Event, volume: Volume, step: str, message: str, *, source: str) -> Event:
    """A progress event: a step of a long request on ``volume`` finished."""
    data = results.Progress(
        request_id=request.id, cluster=volume.cluster, volume_id=volume.id, step=step, message=bounded(message)
    )
    return new_event(catalog.progressed_type(request.type), data, source=source, subject=volume.id)
