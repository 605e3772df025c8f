"""The one error tree of the provisioner.

Every failure is either *permanent* (answer the request with a failure result and move on) or
*temporary* (retry with backoff, hold the offset). Adapters translate library exceptions into these
at the point where they call the library, so nothing above ``bus``/``executor`` sees aiokafka or
asyncssh exceptions. Each error carries a machine-readable ``reason`` that ends up in result events.
"""

from __future__ import annotations

from collections.abc import Sequence


class ProvisionerError(Exception):
    """Base of every error the provisioner raises on purpose."""

    reason: str = "Internal"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    @property
    def message(self) -> str:
        return str(self)


class PermanentError(ProvisionerError):
    """Retrying cannot help: the request is answered with a failure result."""

    reason = "Permanent"


class TemporaryError(ProvisionerError):
    """May succeed later; ``delay`` is the suggested wait in seconds before the next try."""

    reason = "Temporary"

    def __init__(self, message: str, *, delay: float = 1.0, reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.delay = delay


class InvalidEvent(PermanentError):
    """An event that cannot be decoded or validated; it goes to the dead-letter topic."""

    reason = "InvalidEvent"


class InvalidTopology(PermanentError):
    reason = "InvalidTopology"


class UnknownCluster(PermanentError):
    reason = "UnknownCluster"


class NoCapacity(PermanentError):
    """The allocator could not place the volume; ``reason`` names the specific shortfall."""

    reason = "NoCapacity"


class VolumeConflict(PermanentError):
    reason = "VolumeConflict"


class VolumeNotFound(PermanentError):
    reason = "VolumeNotFound"


class GlusterError(PermanentError):
    """gluster answered with a failure that retrying will not fix."""

    reason = "GlusterFailed"


class GlusterBusy(TemporaryError):
    """glusterd holds a lock on the volume ("Another transaction is in progress")."""

    reason = "GlusterBusy"


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


class ConfigError(ProvisionerError):
    """A bad setting or CLI argument; the message names it."""

    reason = "ConfigError"
