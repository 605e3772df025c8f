"""Observability against the real thing: promtool, a real Prometheus scraping a real daemon, and a
private Kafka broker that is stopped and started under a running daemon.

* ``promtool check rules`` / ``test rules`` / ``check config``; every alert has a unit test that
  shows it firing and one that shows it silent.
* The daemon serves /metrics that ``promtool check metrics`` accepts.
* With the dev Prometheus (``deploy/dev/prometheus.sh``) scraping a daemon that provisioned and
  deleted a volume, answered a failed request, dead-lettered a malformed event and probed an
  unreachable node, every PromQL expression of every dashboard panel (and every template variable)
  returns data through the HTTP API, and every rule evaluates without error.
* /readyz turns 503 when the daemon's broker stops and 200 when it is back, without a restart. That
  broker is a private one (own DEV_STATE and ports): the shared broker is never touched.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML comes with kubernetes-asyncio; no stubs installed

from devstack.stack import DEV_STATE, REPO, Daemon, Stack, free_port, produce
from provisioner.cli.requests import requests_from_file
from provisioner.planning.clusters import cluster_from
from provisioner.state import StateChange

pytestmark = pytest.mark.integration

PROMETHEUS_SH = REPO / "deploy" / "dev" / "prometheus.sh"
KAFKA_SH = REPO / "deploy" / "dev" / "kafka.sh"
RULES_DIR = REPO / "deploy" / "prometheus"
DASHBOARDS = sorted((REPO / "grafana").rglob("*.json"))
TOPOLOGY = REPO / "deploy" / "dev" / "topology.json"
PROMETHEUS = "http://127.0.0.1:19090"
TARGETS = DEV_STATE / "prometheus" / "targets"


def run(*argv: str | Path, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 300) -> str:
    done = subprocess.run([str(a) for a in argv], input=stdin, capture_output=True, text=True, env=env, timeout=timeout)
    assert done.returncode == 0, f"{argv} exit {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def promtool() -> str:
    run(PROMETHEUS_SH, "install")  # apt-get installs Debian's prometheus when it is missing
    return "/usr/bin/promtool"


# --- rules and config --------------------------------------------------------------------------------


def test_rules_pass_promtool_check_and_their_unit_tests(promtool: str) -> None:
    assert "SUCCESS" in run(promtool, "check", "rules", RULES_DIR / "rules.yml")
    out = run(promtool, "test", "rules", RULES_DIR / "rules_test.yml")
    assert "SUCCESS" in out and "FAILED" not in out, out


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    rules = yaml.safe_load((RULES_DIR / "rules.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule}
    assert {
        "GlusterProvisionerRequestFailureRatioHigh",
        "GlusterProvisionerDeadLetters",
        "GlusterProvisionerCapacityHigh",
        "GlusterProvisionerConsumerLagGrowing",
        "GlusterProvisionerStorageNodeUnreachable",
        "GlusterProvisionerDriftFound",
    } <= alerts
    cases = [
        case
        for test in yaml.safe_load((RULES_DIR / "rules_test.yml").read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    for alert in alerts:
        mine = [case for case in cases if case["alertname"] == alert]
        assert any(case["exp_alerts"] for case in mine), f"{alert}: no test shows it firing"
        assert any(not case["exp_alerts"] for case in mine), f"{alert}: no test shows it silent"


def test_the_scrape_config_is_valid(promtool: str) -> None:
    assert "is valid prometheus config file" in run(promtool, "check", "config", RULES_DIR / "prometheus.yml")


# --- the dev Prometheus scraping a daemon ------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus(promtool: str) -> Iterator[str]:
    """The dev Prometheus; started here if it was not up, and then stopped again afterwards."""
    was_up = subprocess.run([str(PROMETHEUS_SH), "status"], capture_output=True).returncode == 0
    if not was_up:
        run(PROMETHEUS_SH, "up")
    try:
        yield PROMETHEUS
    finally:
        if not was_up:
            run(PROMETHEUS_SH, "down")


@dataclass
class Observed:
    daemon: Daemon
    stack: Stack
    cluster: str
    instance: str


def topology_file(directory: Path, cluster: str, *, ghost: bool = False) -> Path:
    document = json.loads(TOPOLOGY.read_text())
    entry = document["clusters"][0]
    entry["id"] = cluster
    if ghost:  # one node nobody listens for: its health probe fails with NodeUnreachable
        node = entry["nodes"][0]
        node["node"]["hostnames"] = {"manage": ["127.0.0.1"], "storage": ["127.0.0.1"]}
        entry["nodes"] = [node]
    path = directory / f"{cluster}.json"
    path.write_text(json.dumps({"clusters": [entry]}))
    return path


def cli(stack: Stack, *args: str, expect: int = 0) -> str:
    done = stack.cli(*args)
    assert done.returncode == expect, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}"
    return done.stdout


async def query(session: aiohttp.ClientSession, promql: str) -> list[dict[str, Any]]:
    async with session.get(f"{PROMETHEUS}/api/v1/query", params={"query": promql}) as response:
        body = await response.json()
    assert body["status"] == "success", (promql, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def wait_for(session: aiohttp.ClientSession, promql: str, *, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not await query(session, promql):
        assert time.monotonic() < deadline, f"Prometheus never answered {promql!r}"
        await asyncio.sleep(1)


@pytest.fixture(scope="module")
async def observed(stack: Stack, prometheus: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Observed]:
    """A daemon of its own (own topics and cluster ids), scraped by Prometheus, after some traffic."""
    workdir = tmp_path_factory.mktemp("observability")
    mine = Stack(env=stack.env, gluster=stack.gluster)
    daemon = Daemon(mine, workdir / "daemon.log")
    cluster = f"obs{uuid.uuid4().hex[:8]}"
    instance = f"127.0.0.1:{daemon.port}"
    target = TARGETS / f"{mine.prefix}.json"
    daemon.start()
    try:
        await daemon.wait_ready()
        TARGETS.mkdir(parents=True, exist_ok=True)
        target.with_suffix(".tmp").write_text(json.dumps([{"targets": [instance], "labels": {"source": "tests"}}]))
        target.with_suffix(".tmp").rename(target)
        async with aiohttp.ClientSession() as session:  # scraped before the traffic, so rates see all of it
            await wait_for(session, f'up{{instance="{instance}"}} == 1')

        cli(mine, "topology", "load", str(topology_file(workdir, cluster)), "--wait", "--timeout", "60")
        # A load probes its nodes, so one that is down cannot be loaded: a cluster whose node went
        # down after its load is written to the state topic, and the daemon restarted to read it.
        [ghost] = requests_from_file(topology_file(workdir, f"{cluster}-ghost", ghost=True), cluster=None)
        change = StateChange.put_cluster(cluster_from(ghost))
        await produce(mine, change.value or b"", key=change.key.encode(), topic=mine.topic("state"))
        daemon.stop()
        daemon.start()
        await daemon.wait_ready()
        name = f"{cluster}_vol"
        cli(mine, "request", "provision", "--cluster", cluster, "--size", "1GiB", "--name", name, "--wait")
        failed = cli(mine, "request", "provision", "--cluster", "nosuch", "--size", "1GiB", "--wait", expect=1)
        assert "UnknownCluster" in failed
        await produce(mine, b"{this is not json", key=cluster.encode())
        cli(mine, "request", "delete", "--cluster", cluster, "--name", name, "--wait", "--timeout", "120")

        async with aiohttp.ClientSession() as session:
            mine_only = f'instance="{instance}"'
            await wait_for(session, f'provisioner_requests_completed_total{{{mine_only},type="delete"}} > 0')
            await wait_for(session, f'provisioner_dead_letters_total{{{mine_only},reason="MalformedJson"}} > 0')
            await wait_for(session, f'provisioner_node_up{{{mine_only},node="127.0.0.1"}} == 0')
            await wait_for(
                session, f'count_over_time(cluster:provisioner_device_used_bytes:sum{{cluster="{cluster}"}}[5m]) > 2'
            )
        yield Observed(daemon, mine, cluster, instance)
    finally:
        target.unlink(missing_ok=True)
        code = daemon.stop()
        print(f"\n--- observed daemon exited {code}; last lines ---\n{daemon.tail(20)}")


def concrete(expr: str, observed: Observed) -> str:
    """Grafana's variables replaced the way Grafana would for this daemon and its clusters."""
    values = {
        "__rate_interval": "5m",
        "__interval": "10s",
        "__range": "1h",
        "instance": re.escape(observed.instance).replace("\\", "\\\\"),
        "cluster": f"{observed.cluster}.*",
        "node": ".+",
    }
    for name, value in values.items():
        expr = expr.replace(f"${{{name}}}", value).replace(f"${name}", value)
    assert "$" not in expr, f"unknown variable in {expr}"
    return expr


def all_nan(result: list[dict[str, Any]]) -> bool:
    return all(math.isnan(float(r["value"][1])) for r in result)


async def test_every_dashboard_query_returns_data(observed: Observed) -> None:
    empty, nan_only, checked = [], [], 0
    async with aiohttp.ClientSession() as session:
        for path in DASHBOARDS:
            board = json.loads(path.read_text())
            for variable in board["templating"]["list"]:
                if variable["type"] != "query":
                    continue
                metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["query"]["query"]).groups()  # type: ignore[union-attr]
                if not await query(session, f'count by ({label}) ({metric}{{instance="{observed.instance}"}})'):
                    empty.append(f"{path.name}: variable {variable['name']}")
            for panel in board["panels"]:
                for target in panel.get("targets", []):
                    expr = concrete(target["expr"], observed)
                    result = await query(session, expr)
                    checked += 1
                    where = f"{path.name} / {panel['title']} / {target['refId']}: {expr}"
                    if not result:
                        empty.append(where)
                    elif all_nan(result):
                        nan_only.append(where)
    print(f"\n{checked} panel queries and their template variables return data")
    assert checked >= 40
    assert not empty, "queries without data:\n" + "\n".join(empty)
    assert not nan_only, "queries with NaN only:\n" + "\n".join(nan_only)


async def test_rules_evaluate_without_errors_on_live_data(observed: Observed) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{PROMETHEUS}/api/v1/rules") as response:
        groups = (await response.json())["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) >= 15
    assert all(rule["health"] == "ok" for rule in rules), [r for r in rules if r["health"] != "ok"]


async def test_live_metrics_pass_promtool_check_metrics(observed: Observed, promtool: str) -> None:
    text = await observed.daemon.metrics()
    for family in (
        "provisioner_request_duration_seconds_bucket",
        "provisioner_step_duration_seconds_bucket",
        "provisioner_node_command_failures_total",
        "provisioner_device_free_bytes",
        "provisioner_consumer_lag_records",
    ):
        assert f"\n{family}{{" in text, family
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == "", checked.stdout + checked.stderr


# --- readiness follows the broker --------------------------------------------------------------------


async def readyz(port: int) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/readyz") as response:
        return response.status, await response.text()


async def wait_readyz(daemon: Daemon, status: int, *, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    last = (0, "")
    while time.monotonic() < deadline:
        assert daemon.process is not None and daemon.process.poll() is None, f"daemon exited:\n{daemon.tail()}"
        last = await readyz(daemon.port)
        if last[0] == status:
            return last[1]
        await asyncio.sleep(0.5)
    raise AssertionError(f"/readyz stayed {last[0]} ({last[1]!r}) for {timeout}s, wanted {status}\n{daemon.tail()}")


async def test_readyz_follows_a_broker_that_stops_and_returns(stack: Stack, tmp_path: Path) -> None:
    state = tmp_path / "state"
    bootstrap_port, controller_port = free_port(), free_port()
    env = {
        **os.environ,
        "DEV_STATE": str(state),
        "KAFKA_PORT": str(bootstrap_port),
        "KAFKA_CONTROLLER_PORT": str(controller_port),
        "KAFKA_HEAP_OPTS": "-Xms128m -Xmx384m",
        "PYTHON": sys.executable,
    }
    private = Stack(
        env={**stack.env, "PROVISIONER_KAFKA__BOOTSTRAP": f"127.0.0.1:{bootstrap_port}"}, gluster=stack.gluster
    )
    daemon = Daemon(private, tmp_path / "daemon.log")
    try:
        run(KAFKA_SH, "up", env=env)
        daemon.start()
        await daemon.wait_ready()
        text = await wait_readyz(daemon, 200, timeout=30)
        assert text.startswith("ready\nkafka: ok")

        run(KAFKA_SH, "down", env=env)
        text = await wait_readyz(daemon, 503, timeout=60)
        assert text.startswith("not ready\n") and "kafka: failed" in text, text
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{daemon.port}/healthz") as r:
            assert r.status == 200, "liveness does not depend on the broker"
        assert "\nprovisioner_ready 0.0\n" in await daemon.metrics()

        run(KAFKA_SH, "up", env=env)
        text = await wait_readyz(daemon, 200, timeout=120)
        assert "kafka: ok" in text
        assert "\nprovisioner_ready 1.0\n" in await daemon.metrics()
    finally:
        code = daemon.stop()
        print(f"\n--- daemon exited {code}; last lines ---\n{daemon.tail(30)}")
        subprocess.run([str(KAFKA_SH), "down"], env=env, capture_output=True, timeout=120)
