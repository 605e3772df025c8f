"""Metrics, readiness and dashboards without a broker: what the exposition holds, and what refers to it.

* The capacity collector turns the desired state into per-device bytes and per-cluster counts.
* Readiness answers from the last background check, and stale or crashed checks count as failures.
* Every label value the code emits for steps and dead letters is in the documented vocabulary.
* Every metric a dashboard or a rule names exists, names follow the Prometheus conventions, and
  every panel reads its Prometheus through the ``datasource`` variable.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML comes with kubernetes-asyncio; no stubs installed
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY, CollectorRegistry

from provisioner import metrics
from provisioner.domain import Brick, BrickId, DeviceId, NodeId, Replicate, Volume, VolumeId, VolumeStatus
from provisioner.errors import InvalidEvent, NodeUnreachable, TemporaryError
from provisioner.events import catalog, models
from provisioner.events.envelope import decode_request
from provisioner.executor import Argv, CommandResult
from provisioner.observe.capacity import CapacityCollector
from provisioner.observe.health import NodeHealth
from provisioner.observe.http import KafkaCheck, NodeCheck, Readiness, make_app
from provisioner.planning.clusters import cluster_from
from provisioner.state import DesiredState, StateChange

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((REPO / "grafana").rglob("*.json"))
RULES = REPO / "deploy" / "prometheus" / "rules.yml"
GiB = 1024**3


def load_dev_cluster(state: DesiredState, cluster: str = "dev") -> None:
    document = json.loads((REPO / "deploy" / "dev" / "topology.json").read_text())["clusters"][0]
    topology = models.LoadTopology.model_validate({"cluster": cluster, "nodes": document["nodes"]})
    state.apply(StateChange.put_cluster(cluster_from(topology)))


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


# --- capacity --------------------------------------------------------------------------------------


def test_capacity_is_read_from_the_desired_state_at_scrape_time() -> None:
    state = DesiredState()
    registry = CollectorRegistry()
    CapacityCollector.register(state, registry)
    assert (
        sample(
            registry, "provisioner_device_capacity_bytes", cluster="dev", node="10.77.0.11", device="/srv/devices/dev1"
        )
        is None
    )

    load_dev_cluster(state)
    cluster = state.clusters["dev"]  # type: ignore[index]
    node = cluster.nodes[0]
    device = node.devices[0]
    labels = {"cluster": "dev", "node": node.manage, "device": device.name}
    assert sample(registry, "provisioner_device_capacity_bytes", **labels) == device.capacity
    assert sample(registry, "provisioner_device_used_bytes", **labels) == 0
    assert sample(registry, "provisioner_bricks", cluster="dev") == 0
    assert sample(registry, "provisioner_volumes", cluster="dev", status="online") == 0

    bricks = tuple(
        Brick(BrickId(f"{i:032x}"), NodeId(n.id), DeviceId(n.devices[0].id), 2 * GiB, 0)
        for i, n in enumerate(cluster.nodes)
    )
    volume = Volume(VolumeId("a" * 32), "v1", cluster.id, 2 * GiB, Replicate(), bricks, VolumeStatus.CREATING)
    state.apply(StateChange.put_volume(volume))
    assert sample(registry, "provisioner_device_used_bytes", **labels) == 2 * GiB
    assert sample(registry, "provisioner_device_free_bytes", **labels) == device.capacity - 2 * GiB
    other = {"cluster": "dev", "node": node.manage, "device": node.devices[1].name}
    assert sample(registry, "provisioner_device_used_bytes", **other) == 0
    assert sample(registry, "provisioner_volumes", cluster="dev", status="creating") == 1
    assert sample(registry, "provisioner_volumes", cluster="dev", status="online") == 0
    assert sample(registry, "provisioner_bricks", cluster="dev") == 3

    state.apply(StateChange.delete_volume(volume.id))
    assert sample(registry, "provisioner_device_used_bytes", **labels) == 0
    assert sample(registry, "provisioner_volumes", cluster="dev", status="creating") == 0


def test_the_capacity_collector_registers_once_and_unregisters() -> None:
    registry = CollectorRegistry()
    collector = CapacityCollector.register(DesiredState(), registry)
    with pytest.raises(ValueError, match="Duplicated"):
        CapacityCollector.register(DesiredState(), registry)
    collector.unregister(registry)
    CapacityCollector.register(DesiredState(), registry)


# --- gauges replaced as a whole ----------------------------------------------------------------------


def test_lag_and_node_series_follow_the_assignment_and_the_topology() -> None:
    metrics.set_consumer_lag("req", {0: 3, 1: 0})
    assert sample(REGISTRY, "provisioner_consumer_lag_records", topic="req", partition="0") == 3
    metrics.set_consumer_lag("req", {1: 2})  # partition 0 was revoked
    assert sample(REGISTRY, "provisioner_consumer_lag_records", topic="req", partition="0") is None
    assert sample(REGISTRY, "provisioner_consumer_lag_records", topic="req", partition="1") == 2

    metrics.set_node_up({("dev", "n1"): True, ("dev", "n2"): False})
    assert sample(REGISTRY, "provisioner_node_up", cluster="dev", node="n2") == 0
    metrics.set_node_up({("dev", "n1"): True})
    assert sample(REGISTRY, "provisioner_node_up", cluster="dev", node="n2") is None


# --- readiness ---------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def passing() -> str:
    return "fine"


async def failing() -> str:
    raise TemporaryError("Kafka at b:9092 does not answer")


async def crashing() -> str:
    raise RuntimeError("bug")


async def test_readiness_answers_from_the_last_checks() -> None:
    clock = Clock()
    readiness = Readiness({"kafka": passing, "nodes": passing}, interval=5, timeout=1, clock=clock)
    ready, text = readiness.status()
    assert not ready and "kafka: failed: not checked yet" in text

    assert await readiness.check_once()
    ready, text = readiness.status()
    assert ready
    assert text.splitlines() == ["ready", "kafka: ok: fine", "nodes: ok: fine"]
    assert sample(REGISTRY, "provisioner_ready") == 1
    assert sample(REGISTRY, "provisioner_ready_check", check="kafka") == 1

    clock.now += 60  # the checker stopped running: results this old are not trusted
    ready, text = readiness.status()
    assert not ready and "last result is 60s old" in text


async def test_a_failing_crashing_or_hanging_check_makes_the_daemon_unready() -> None:
    async def hanging() -> str:
        await asyncio.Event().wait()
        return "never"

    readiness = Readiness({"kafka": failing, "state": crashing, "nodes": hanging, "ok": passing}, timeout=0.01)
    assert not await readiness.check_once()
    ready, text = readiness.status()
    assert not ready
    lines = text.splitlines()
    assert lines[0] == "not ready"
    assert "kafka: failed: Kafka at b:9092 does not answer" in lines
    assert "state: failed: check crashed: RuntimeError: bug" in lines
    assert "nodes: failed: no answer within 0.01s" in lines
    assert "ok: ok: fine" in lines
    assert sample(REGISTRY, "provisioner_ready") == 0
    assert sample(REGISTRY, "provisioner_ready_check", check="kafka") == 0
    assert sample(REGISTRY, "provisioner_ready_check", check="ok") == 1


async def test_the_kafka_check_publishes_the_lag_it_measured() -> None:
    async def lag() -> Mapping[int, int]:
        return {0: 4, 2: 1}

    detail = await KafkaCheck(lag, topic="t.requests")()
    assert detail == "2 partition(s) of t.requests assigned, lag 5"
    assert sample(REGISTRY, "provisioner_consumer_lag_records", topic="t.requests", partition="2") == 1


class Nodes:
    """A fake executor: hosts in ``down`` are unreachable, the others answer the health probe."""

    def __init__(self, down: set[str]) -> None:
        self.down = down
        self.ran: list[tuple[str, Argv]] = []

    async def run(self, host: str, argv: Argv, *, timeout: float, check: bool = True) -> CommandResult:
        self.ran.append((host, argv))
        if host in self.down:
            raise NodeUnreachable(host, "connection refused")
        return CommandResult(
            host, argv, 0, "<cliOutput><opRet>0</opRet><opErrno>0</opErrno><opErrstr/></cliOutput>", ""
        )

    async def close(self) -> None:
        return None


async def test_nodes_check_fails_only_when_a_cluster_has_no_reachable_node() -> None:
    state = DesiredState()
    load_dev_cluster(state)
    nodes = Nodes(down={"10.77.0.12"})
    health = NodeHealth(state, nodes, down_after=1)
    check = NodeCheck(health, stale_after=60)
    with pytest.raises(TemporaryError, match="not probed yet"):
        await check()
    await health.probe_once()
    assert await check() == "2/3 nodes up; down: 10.77.0.12 (unreachable over SSH: connection refused)"
    assert {argv for _, argv in nodes.ran} == {("gluster", "--mode=script", "--xml", "--timeout=5", "pool", "list")}
    assert sample(REGISTRY, "provisioner_node_up", cluster="dev", node="10.77.0.12") == 0
    assert sample(REGISTRY, "provisioner_node_up", cluster="dev", node="10.77.0.11") == 1

    nodes.down = {"10.77.0.11", "10.77.0.12", "10.77.0.13"}
    await health.probe_once()
    with pytest.raises(TemporaryError, match="no node of cluster"):
        await check()


async def test_http_endpoints() -> None:
    state = {"ready": False}

    def status() -> tuple[bool, str]:
        return state["ready"], "ready" if state["ready"] else "not ready\nkafka: failed: gone"

    async with TestClient(TestServer(make_app(status))) as client:
        assert (await client.get("/healthz")).status == 200
        response = await client.get("/readyz")
        assert response.status == 503
        assert "kafka: failed: gone" in await response.text()
        state["ready"] = True
        assert (await client.get("/readyz")).status == 200
        scraped = await client.get("/metrics")
        assert scraped.status == 200
        assert scraped.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert 'provisioner_build_info{python="' in await scraped.text()


# --- label vocabularies --------------------------------------------------------------------------------


def provisioner_sources() -> Iterator[tuple[Path, ast.Module]]:
    """The daemon's and the watcher's sources; the CSI node plugin answers gRPC codes, not results."""
    for path in sorted((REPO / "provisioner").rglob("*.py")):
        if "csi" not in path.relative_to(REPO / "provisioner").parts:
            yield path, ast.parse(path.read_text(), str(path))


def call_name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def test_every_step_the_code_records_is_in_the_vocabulary() -> None:
    used = set()
    for _, tree in provisioner_sources():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args or not isinstance(node.args[0], ast.Constant):
                continue
            is_step = call_name(node) == "step" and ast.unparse(node.func).startswith("metrics.")
            is_label = ast.unparse(node.func).endswith("STEP_SECONDS.labels")
            if is_step or is_label:
                used.add(node.args[0].value)
    assert used, "no step found: has metrics.step moved?"
    assert used <= set(metrics.STEPS), used - set(metrics.STEPS)


def test_every_dead_letter_reason_is_in_the_vocabulary() -> None:
    reasons = set()
    for _, tree in provisioner_sources():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            if call_name(node) == "InvalidEvent":
                reasons |= {
                    k.value.value for k in node.keywords if k.arg == "reason" and isinstance(k.value, ast.Constant)
                }
            elif "dead_letter" in call_name(node):
                reasons |= {a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)}
    assert {"MalformedJson", "KeyMismatch", "HandlerCrashed"} <= reasons
    assert reasons <= set(metrics.DEAD_LETTER_REASONS), reasons - set(metrics.DEAD_LETTER_REASONS)
    with pytest.raises(InvalidEvent) as bad:
        decode_request(b"{nope")
    assert bad.value.dead_letter_reason in metrics.DEAD_LETTER_REASONS


def test_every_failure_reason_is_in_the_vocabulary() -> None:
    """A reason missing here still counts, but its first failure is invisible to rate(): add it."""
    reasons: set[object] = set()
    for _, tree in provisioner_sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "reason" and isinstance(node.value, ast.Constant):
                reasons.add(node.value.value)
            elif isinstance(node, ast.ClassDef):
                for statement in node.body:
                    if (
                        isinstance(statement, ast.Assign)
                        and [ast.unparse(t) for t in statement.targets] == ["reason"]
                        and isinstance(statement.value, ast.Constant)
                    ):
                        reasons.add(statement.value.value)
    assert {"NoDeviceWithSpace", "UnknownCluster", "VolumeNameTaken"} <= reasons
    known = set(metrics.FAILURE_REASONS) | set(metrics.DEAD_LETTER_REASONS)
    assert reasons <= known, f"add to provisioner.metrics.FAILURE_REASONS: {reasons - known}"


def test_alerted_label_values_exist_before_the_first_event() -> None:
    """``increase()`` cannot see a counter's first increment unless the series existed at 0."""
    assert sample(REGISTRY, "provisioner_dead_letters_total", reason="KeyMismatch") is not None
    assert sample(REGISTRY, "provisioner_reconcile_drift_found_total", kind="orphan_brick") is not None
    for kind in set(catalog.REQUEST_KINDS.values()):
        assert sample(REGISTRY, "provisioner_requests_received_total", type=kind) is not None
        assert sample(REGISTRY, "provisioner_request_duration_seconds_count", type=kind) is not None
    for step in metrics.STEPS:
        assert sample(REGISTRY, "provisioner_step_duration_seconds_count", step=step) is not None


# --- names, and what dashboards and rules refer to ---------------------------------------------------


def exposed_names() -> set[str]:
    """Every series name the exposition can hold, whether or not a label set was observed yet."""
    state = DesiredState()
    load_dev_cluster(state)
    families = [*REGISTRY.collect(), *CapacityCollector(state).collect()]
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "info": ("_info",)}
    return {f.name + suffix for f in families for suffix in suffixes.get(f.type, ("",))}


def test_metric_names_follow_the_prometheus_conventions() -> None:
    families = [f for f in REGISTRY.collect() if f.name.startswith("provisioner_")]
    families += list(CapacityCollector(DesiredState()).describe())
    forbidden_labels = {"volume", "volume_id", "name", "claim", "request", "request_id", "id"}
    for family in families:
        assert re.fullmatch(r"provisioner_[a-z][a-z0-9_]*", family.name), family.name
        assert family.documentation, family.name
        assert not family.name.endswith("_total"), "the client adds _total to counters"
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        for s in family.samples:
            assert not set(s.labels) & forbidden_labels, (family.name, s.labels)
    names = {f.name for f in families}
    for required in (
        "provisioner_requests_received",
        "provisioner_requests_completed",
        "provisioner_request_duration_seconds",
        "provisioner_step_duration_seconds",
        "provisioner_node_command_duration_seconds",
        "provisioner_node_command_failures",
        "provisioner_requests_in_flight",
        "provisioner_retries",
        "provisioner_dead_letters",
        "provisioner_consumer_lag_records",
        "provisioner_device_capacity_bytes",
        "provisioner_device_used_bytes",
        "provisioner_device_free_bytes",
        "provisioner_volumes",
        "provisioner_bricks",
        "provisioner_reconcile_drift_found",
        "provisioner_reconcile_drift_repaired",
        "provisioner_build",
    ):
        assert required in names, required


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def dashboard_targets(board: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target


METRIC = re.compile(r"\b((?:provisioner|cluster|cluster_node)[a-z_]*:?[a-z_]*(?::[a-z_]+)?)\b")


def referenced_metrics(expr: str) -> set[str]:
    without_labels = re.sub(r"\{[^}]*\}", "", expr)
    without_by = re.sub(r"\b(by|without)\s*\([^)]*\)", "", without_labels)
    return {m for m in METRIC.findall(without_by) if m.startswith("provisioner_") or ":" in m}


def test_dashboards_and_rules_only_name_metrics_that_exist() -> None:
    known = exposed_names() | recorded_names() | {"up"}
    assert len(DASHBOARDS) >= 3
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for title, target in dashboard_targets(board):
            missing = referenced_metrics(target["expr"]) - known
            assert not missing, f"{path.name} / {title}: {missing}"
    for rule in rules():
        assert referenced_metrics(rule["expr"]) or rule["expr"].startswith("up{"), rule
        assert not referenced_metrics(rule["expr"]) - known, rule["expr"]


def test_dashboards_read_their_prometheus_from_the_datasource_variable() -> None:
    uids = set()
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        assert board["uid"] not in uids
        uids.add(board["uid"])
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        panel_ids = [p["id"] for p in board["panels"]]
        assert len(panel_ids) == len(set(panel_ids)), path.name
        for panel in board["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel.get("description"), panel["title"]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}"
                assert target["expr"].strip()
        for name, variable in variables.items():
            if variable["type"] == "query":
                assert variable["datasource"]["uid"] == "${datasource}", name
