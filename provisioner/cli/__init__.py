"""The ``provisioner`` command: the daemon, the producer side, and tools.

Settings come from the environment (``PROVISIONER_<GROUP>__<FIELD>``) or ``--env-file``; flags such
as ``--bootstrap`` override them. Exit codes: 0 success, 1 the request failed, 2 bad usage or
settings, 3 no result within ``--timeout``, 4 Kafka unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from provisioner import app
from provisioner.bus import client
from provisioner.cli import render
from provisioner.cli.parser import build_parser
from provisioner.cli.requests import events_of
from provisioner.csi.__main__ import main as csi_main
from provisioner.errors import ConfigError, ProvisionerError, TemporaryError
from provisioner.events import asyncapi
from provisioner.events.schema import schemas
from provisioner.reconcile import runs as reconciler
from provisioner.settings import ENV_PREFIX, Settings
from provisioner.watch import watcher


def load_settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if args.bootstrap:
        overrides["kafka"] = {"bootstrap": args.bootstrap}
    if args.log_level:
        overrides["log_level"] = args.log_level
    env_file = args.env_file
    if env_file is not None and not env_file.is_file():
        raise SettingsProblem(f"--env-file {env_file}: no such file")
    try:
        settings = Settings(_env_file=env_file, **overrides)
    except ValidationError as e:
        problems = [f"{ENV_PREFIX}{'__'.join(str(p).upper() for p in err['loc'])}: {err['msg']}" for err in e.errors()]
        raise SettingsProblem("invalid settings:\n  " + "\n  ".join(problems)) from e
    if args.command == "run":
        for name, path in (
            ("SSH__KEY_FILE", settings.ssh.key_file),
            ("SSH__KNOWN_HOSTS", settings.ssh.known_hosts),
        ):
            if not path.is_file():
                raise SettingsProblem(f"{ENV_PREFIX}{name}: {path} does not exist")
    kube = settings.kubernetes
    uses_kube = args.command == "watch" or (args.command == "run" and kube.enabled)
    if uses_kube and kube.kubeconfig is not None and not kube.kubeconfig.is_file():
        raise SettingsProblem(f"{ENV_PREFIX}KUBERNETES__KUBECONFIG: {kube.kubeconfig} does not exist")
    return settings


class SettingsProblem(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "csi":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "schemas":
        return _export_schemas(args.directory)
    if args.command == "csi":  # the node plugin has settings of its own (PROVISIONER_CSI__*)
        return csi_main(argv[argv.index("csi") + 1 :], env_file=args.env_file)
    try:
        settings = load_settings(args)
    except SettingsProblem as e:
        print(f"provisioner: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("aiokafka", "asyncssh", "kubernetes_asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        if args.command == "run":
            asyncio.run(app.run(settings))
            return 0
        if args.command == "watch":
            asyncio.run(watcher.run(settings))
            return 0
        if args.command == "reconcile":
            report = asyncio.run(
                reconciler.reconcile(settings, cluster=args.cluster, repair=args.repair, stale_after=args.stale_after)
            )
            print(render.report(report, as_json=args.json))
            return 0 if report.clean else 1
        if args.command == "state":
            print(asyncio.run(render.state(settings, cluster=args.cluster, as_json=args.json)))
            return 0
        return asyncio.run(_produce(args, settings))
    except ProvisionerError as e:
        print(f"provisioner: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 4 if isinstance(e, TemporaryError) else 1
    except KeyboardInterrupt:
        return 130


async def _produce(args: argparse.Namespace, settings: Settings) -> int:
    status = 0
    for event, key in events_of(args):
        result = await client.request(settings.kafka, event, key=key, wait=args.timeout if args.wait else None)
        if result is None:
            print(f"published {event.type} id={event.id} key={key}")
            continue
        print(render.result(result, as_json=args.json))
        if ".failed." in result.type:
            status = 1
    return status


def _export_schemas(directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    files = schemas()
    for name, text in files.items():
        (directory / name).write_text(text)
    (directory / "asyncapi.json").write_text(json.dumps(asyncapi.document(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {len(files)} event schemas and asyncapi.json to {directory}")
    return 0
