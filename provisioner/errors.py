"""The one error tree of the provisioner.

Every failure is either *permanent* (answer the request with a failure result and move on) or
*temporary* (retry with backoff; the one retry owner, ``handling.retry``, decides how often).
Adapters translate library exceptions into these where they call the library, so nothing above
``bus``, ``kube`` or ``executor`` sees aiokafka, kubernetes_asyncio or asyncssh exceptions.

Each class carries the machine-readable ``reason`` that ends up in failure events, so code branches
on types (``except NodeDown``), never on reason strings, and the reason vocabulary is the set of
classes here (``REASONS``: the schemas and the metrics take it from there).

Its length (over 300 lines) is one short class per reason code: splitting the tree would hide the
reason vocabulary it exists to show.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar


class ProvisionerError(Exception):
    """Base of every error the provisioner raises on purpose."""

    reason: ClassVar[str] = "Internal"

    @property
    def message(self) -> str:
        return str(self)


class PermanentError(ProvisionerError):
    """Retrying cannot help: the request is answered with a failure result."""

    reason = "Permanent"


class TemporaryError(ProvisionerError):
    """May succeed later; ``delay`` is the least wait in seconds before the next try."""

    reason = "Temporary"

    def __init__(self, message: str, *, delay: float = 1.0) -> None:
        super().__init__(message)
        self.delay = delay


class Internal(PermanentError):
    """An unexpected failure (a bug or an unknown condition) that bounded retries did not cure."""

    reason = "Internal"


# --- input -----------------------------------------------------------------------------------------


class InvalidEvent(PermanentError):
    """An event that cannot be decoded or validated; it goes to the dead-letter topic.

    ``reason`` says what was wrong (``metrics.DEAD_LETTER_REASONS``: MalformedJson, InvalidData, ...)."""

    reason = "InvalidEvent"

    def __init__(self, message: str, *, reason: str = "InvalidEvent") -> None:
        super().__init__(message)
        self.dead_letter_reason = reason


class UnknownType(PermanentError):
    reason = "UnknownType"


class ConfigError(ProvisionerError):
    """A bad setting or CLI argument; the message names it."""

    reason = "ConfigError"


# --- topology ----------------------------------------------------------------------------------------


class InvalidTopology(PermanentError):
    reason = "InvalidTopology"


class UnknownNode(InvalidTopology):
    reason = "UnknownNode"


class UnknownDevice(InvalidTopology):
    reason = "UnknownDevice"


class DeviceInUse(InvalidTopology):
    """A device (or node) would leave while bricks remain on it."""

    reason = "DeviceInUse"


class DeviceNotEmpty(InvalidTopology):
    """A topology device holds a filesystem, partition table or volume group, and may not be wiped."""

    reason = "DeviceNotEmpty"


class UnknownCluster(PermanentError):
    reason = "UnknownCluster"


# --- placement ---------------------------------------------------------------------------------------


class NoCapacity(PermanentError):
    """The allocator could not place the volume; the subclass names the specific shortfall."""

    reason = "NoCapacity"


class NotEnoughNodes(NoCapacity):
    reason = "NotEnoughNodes"


class NotEnoughZones(NoCapacity):
    reason = "NotEnoughZones"


class NoDeviceWithSpace(NoCapacity):
    reason = "NoDeviceWithSpace"


class DeviceFull(NoCapacity):
    """A device had less room than placement believed (filled behind our back, or a thin pool full);
    the message names the node and the device."""

    reason = "DeviceFull"


class TooManyBricks(NoCapacity):
    reason = "TooManyBricks"


class MinimumBrickSize(NoCapacity):
    reason = "MinimumBrickSize"


class CannotEvacuate(PermanentError):
    """A brick that cannot move (a distribute volume has no other copy to heal from)."""

    reason = "CannotEvacuate"


class NodeDown(TemporaryError):
    """Placement failed only because nodes the health probes see down were left out."""

    reason = "NodeDown"


# --- volumes -----------------------------------------------------------------------------------------


class VolumeConflict(PermanentError):
    reason = "VolumeConflict"


class VolumeNameTaken(VolumeConflict):
    reason = "VolumeNameTaken"


class VolumeNotFound(PermanentError):
    reason = "VolumeNotFound"


class VolumeHasSnapshots(VolumeConflict):
    """A volume with snapshots cannot be deleted (gluster refuses too); delete its snapshots first."""

    reason = "VolumeHasSnapshots"


class SnapshotUnsupported(PermanentError):
    """A snapshot (or a clone) of a volume with a brick that is not a thin LV (the file backend)."""

    reason = "SnapshotUnsupported"


class SnapshotNotFound(PermanentError):
    reason = "SnapshotNotFound"


class SnapshotNameTaken(PermanentError):
    """The pool already has a snapshot of that name that is not this request's."""

    reason = "SnapshotNameTaken"


class DeadlineExceeded(PermanentError):
    """The request ran out of its time budget (``worker.request_deadline``) while retrying."""

    reason = "DeadlineExceeded"


# --- gluster and the nodes ---------------------------------------------------------------------------


class GlusterError(PermanentError):
    """gluster answered with a failure that retrying will not fix."""

    reason = "GlusterFailed"


class InvalidOption(GlusterError):
    reason = "InvalidOption"


class PeerProbeFailed(GlusterError):
    reason = "PeerProbeFailed"


class PeerDetachFailed(GlusterError):
    reason = "PeerDetachFailed"


class GlusterBusy(TemporaryError):
    """glusterd holds a lock on the volume ("Another transaction is in progress")."""

    reason = "GlusterBusy"


class HealPending(TemporaryError):
    """A brick move waits for the rest of its set to be connected and healed."""

    reason = "HealPending"


class NodeUnreachable(TemporaryError):
    reason = "NodeUnreachable"

    def __init__(self, host: str, detail: str, *, delay: float = 2.0) -> None:
        super().__init__(f"node {host} unreachable: {detail}", delay=delay)
        self.host = host


class HostKeyRejected(PermanentError):
    """The node's SSH host key is not in known_hosts: nothing is run there."""

    reason = "HostKeyRejected"

    def __init__(self, host: str, detail: str) -> None:
        super().__init__(f"host key of {host} not trusted: {detail}")
        self.host = host


class CommandTimeout(TemporaryError):
    reason = "CommandTimeout"

    def __init__(self, host: str, argv: Sequence[str], timeout: float) -> None:
        super().__init__(f"{argv[0] if argv else '?'} on {host} timed out after {timeout:g}s", delay=2.0)
        self.host = host
        self.argv = tuple(argv)


class CommandFailed(ProvisionerError):
    """A node command exited non-zero; the storage layer decides what that means."""

    reason = "CommandFailed"

    def __init__(self, host: str, argv: Sequence[str], exit_status: int, stdout: str, stderr: str) -> None:
        detail = (stderr.strip() or stdout.strip()).splitlines()
        last = detail[-1] if detail else ""
        super().__init__(f"`{' '.join(argv)}` on {host} exited {exit_status}: {last}")
        self.host = host
        self.argv = tuple(argv)
        self.exit_status = exit_status
        self.stdout = stdout
        self.stderr = stderr


# --- Kafka -------------------------------------------------------------------------------------------


class KafkaUnavailable(TemporaryError):
    """The brokers do not answer (or refuse a transaction for a reason that may pass)."""

    reason = "KafkaUnavailable"


# --- Kubernetes --------------------------------------------------------------------------------------


class KubernetesDisabled(PermanentError):
    reason = "KubernetesDisabled"


class KubernetesConflict(TemporaryError):
    reason = "KubernetesConflict"


class KubernetesUnavailable(TemporaryError):
    reason = "KubernetesUnavailable"


class KubernetesForbidden(PermanentError):
    reason = "KubernetesForbidden"


class KubernetesNotFound(PermanentError):
    reason = "KubernetesNotFound"


class KubernetesInvalid(PermanentError):
    reason = "KubernetesInvalid"


class ClaimGone(PermanentError):
    """The claim a provision request names no longer exists (or is a re-created namesake)."""

    reason = "ClaimGone"


class PersistentVolumeTaken(PermanentError):
    """A PV of the name we would create exists for another claim: it is not ours to touch."""

    reason = "PersistentVolumeTaken"


class InvalidClaim(PermanentError):
    """A claim this provisioner cannot serve as written (block mode, a selector, a bad size)."""

    reason = "InvalidClaim"


class InvalidStorageClass(PermanentError):
    """A StorageClass that cannot be served as written; the message names the parameter."""

    reason = "InvalidStorageClass"


class GidsExhausted(PermanentError):
    reason = "GidsExhausted"


def reasons_of(root: type[ProvisionerError]) -> tuple[str, ...]:
    """The reasons of ``root`` and every error class below it, in tree order."""
    seen: list[str] = []
    pending = [root]
    while pending:
        cls = pending.pop(0)
        if cls.reason not in seen:
            seen.append(cls.reason)
        pending += cls.__subclasses__()
    return tuple(seen)


REASONS: tuple[str, ...] = reasons_of(ProvisionerError)
"""Every ``reason`` a failure result can carry (a closed vocabulary, in tree order)."""
