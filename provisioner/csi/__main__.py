"""``python -m provisioner.csi``: the node plugin on its own (``provisioner csi`` calls the same ``run``).

Flags override the ``PROVISIONER_CSI__*`` environment; exit status 2 for bad settings, 1 when the
driver stops on an error, 0 after SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from provisioner.csi.server import run
from provisioner.csi.settings import ENV_PREFIX, CsiSettings
from provisioner.errors import ConfigError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="provisioner csi",
        description="CSI node plugin for gluster volumes: Identity and Node services on a unix socket, "
        "registered with kubelet through its plugin-registration socket.",
        epilog=f"Every flag has a {ENV_PREFIX}<NAME> environment variable (e.g. {ENV_PREFIX}ENDPOINT).",
    )
    p.add_argument("--endpoint", help="CSI socket, unix:///path (default <kubelet-root>/plugins/<driver>/csi.sock)")
    p.add_argument("--driver-name", help="CSI driver name (default glusterfs.gluster.org)")
    p.add_argument("--node-id", help="node id reported to kubelet (default: the host name)")
    p.add_argument("--zone", help="zone reported as topology segment topology.<driver>/zone")
    p.add_argument("--kubelet-root", help="kubelet's root directory (default /var/lib/kubelet)")
    p.add_argument("--state-dir", help="per-volume records and client logs")
    p.add_argument(
        "--allowed-path-root",
        action="append",
        dest="allowed_path_roots",
        help="a directory below which staging/target paths may lie (repeatable; default: the kubelet root)",
    )
    p.add_argument("--http-port", type=int, help="port of /metrics and /healthz (0 = off)")
    p.add_argument("--http-host", help="address of /metrics and /healthz")
    p.add_argument(
        "--no-registration", action="store_false", dest="registration", default=None, help="no kubelet registration"
    )
    p.add_argument("--kubernetes-events", action="store_true", default=None, help="post MountFailed events on claims")
    p.add_argument("--kubeconfig", help="kubeconfig for events (default: in-cluster)")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    return p


def settings_from(argv: list[str] | None = None, *, env_file: Path | None = None) -> CsiSettings:
    args = vars(parser().parse_args(argv))
    overrides: dict[str, Any] = {k: v for k, v in args.items() if v is not None}
    return CsiSettings(_env_file=env_file, **overrides)


def main(argv: list[str] | None = None, *, env_file: Path | None = None) -> int:
    if env_file is not None and not env_file.is_file():
        print(f"provisioner csi: --env-file {env_file}: no such file", file=sys.stderr)
        return 2
    try:
        settings = settings_from(argv, env_file=env_file)
    except ValidationError as e:
        for error in e.errors():
            name = ENV_PREFIX + "__".join(str(part).upper() for part in error["loc"])
            print(f"{name}: {error['msg']}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(run(settings))
    except ConfigError as e:
        print(f"provisioner csi: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
