"""Which paths a CSI request may name: absolute, normalised, and under kubelet's directory.

Kubelet only ever asks for paths below its root directory (``/var/lib/kubelet`` by default:
``plugins/kubernetes.io/csi/<driver>/<hash>/globalmount`` to stage, ``pods/<uid>/volumes/...`` to
publish). Anything else -- a relative path, a path with ``..`` or ``//``, a path outside the root,
or one reached through a symlink that leaves the root -- is not a kubelet request, and mounting
there would let whoever can reach the socket cover any directory of the node. Such paths are
refused before anything touches the file system.

The roots are a setting (``PROVISIONER_CSI__ALLOWED_PATH_ROOTS``) so that csi-sanity, which makes
its directories under ``/tmp``, can run against the real driver; a deployment keeps the default.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Sequence
from pathlib import Path

from provisioner.csi.errors import InvalidArgument

MAX_PATH = 4096  # PATH_MAX on Linux


def checked_path(field: str, value: str, roots: Sequence[Path]) -> Path:
    """``value`` as a Path if it is an absolute, normalised path strictly below one of ``roots``.

    Symlinks in the existing part of the path are resolved and the result checked again, so a link
    inside the root pointing out of it is refused too. The last component may not exist yet (the
    target of NodePublish is created by the driver).
    """
    if not value:
        raise InvalidArgument(field, "required path is missing")
    if len(value) > MAX_PATH or "\x00" in value:
        raise InvalidArgument(field, "not a usable path")
    if not value.startswith("/"):
        raise InvalidArgument(field, f"{value[:200]!r} is not an absolute path")
    normal = posixpath.normpath(value)
    if normal != value or normal.startswith("//"):
        raise InvalidArgument(field, f"{value[:200]!r} is not normalised (no '.', '..', '//' or trailing '/')")
    path = Path(normal)
    if not _below_any(path, roots):
        raise InvalidArgument(field, f"{value[:200]!r} is outside {_roots_text(roots)}")
    resolved = Path(os.path.realpath(path.parent)) / path.name
    if not _below_any(resolved, [Path(os.path.realpath(r)) for r in roots]):
        raise InvalidArgument(field, f"{value[:200]!r} leads outside {_roots_text(roots)} through a symlink")
    return path


def _below_any(path: Path, roots: Sequence[Path]) -> bool:
    return any(path != root and path.is_relative_to(root) for root in roots)


def _roots_text(roots: Sequence[Path]) -> str:
    return " and ".join(str(r) for r in roots) or "the allowed roots (none configured)"
