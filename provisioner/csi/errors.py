"""The errors a CSI call answers with: each one carries the gRPC status code the spec asks for.

They sit under the project's ``ProvisionerError`` tree so logs and tests treat them like every other
deliberate failure, but their meaning is the CSI spec's, not the daemon's permanent/temporary split:
kubelet retries every failed node call with backoff whatever the code, and reads the code only to
tell the user what went wrong. ``InvalidArgument`` names the request field at fault, as the issue
asks and as ``kubectl describe pod`` then shows.
"""

from __future__ import annotations

from typing import ClassVar

import grpc

from provisioner.errors import ProvisionerError


class CsiError(ProvisionerError):
    """A CSI call failed; ``code`` is the gRPC status it answers with, and its name the ``reason``."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    reason = "INTERNAL"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.reason = cls.code.name


class InvalidArgument(CsiError):
    """A request field is missing or malformed; ``field`` names it (CSI's field name)."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotFound(CsiError):
    """The volume is not at the path given (NodeGetVolumeStats, NodeExpandVolume, health)."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(CsiError):
    """The path already holds a different volume, or the same one published incompatibly."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(CsiError):
    """The node is not in the state the call needs (a stale mount, a second single-writer publish)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class MountFailed(CsiError):
    """The glusterfs client could not mount; ``failure`` says why and which server refused.

    INTERNAL, not UNAVAILABLE: kubelet retries either way, and INTERNAL is what the spec's generic
    table uses for a failed operation on the node.
    """

    def __init__(self, message: str, *, failure_reason: str, server: str | None) -> None:
        super().__init__(message)
        self.failure_reason = failure_reason
        self.server = server


class CommandError(CsiError):
    """A mount/umount command (other than the FUSE mount itself) exited non-zero or timed out."""

    def __init__(self, argv: tuple[str, ...], detail: str) -> None:
        super().__init__(f"`{' '.join(argv)}` failed: {detail}")
        self.argv = argv
        self.detail = detail
