"""deploy/kubernetes/csi/: accepted by the real API server, least privilege, settings the driver accepts.

* ``kubectl apply --dry-run=server`` against the dev control plane validates every object (the
  namespace is created for real first, as the namespaced objects need it, and removed again).
* The ClusterRole grants exactly what the driver calls (``provisioner.csi.events.KubernetesCluster``).
* The DaemonSet's environment loads into ``CsiSettings``; its mounts cover the sockets, the state
  directory and the allowed path roots (those Bidirectional); only its one container is privileged;
  the liveness probe reads the driver's own /healthz; the CSIDriver matches the gid model.

The control plane is the dev stack's; this test never starts it (a missing one fails the test).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML comes with kubernetes-asyncio; no stubs installed

from devstack.stack import read_env
from provisioner.csi.settings import CsiSettings
from tests.integration.csi_stack import DEV_STATE, REPO

pytestmark = pytest.mark.integration
MANIFESTS = REPO / "deploy" / "kubernetes" / "csi"
NAMESPACE = "gluster-csi"
Manifest = dict[str, Any]

DRIVER_GRANTS = {
    ("", "persistentvolumes"): {"get", "list"},  # claim_of: the PV of a volume handle
    ("", "events"): {"create", "patch"},  # create_event, bump_event
    ("", "nodes"): {"get"},  # node_label: the zone
}


def documents() -> list[Manifest]:
    found = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    return found


def one(kind: str, name: str) -> Manifest:
    [found] = [d for d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


class Kubectl:
    def __init__(self) -> None:
        env_file = DEV_STATE / "kube" / "env"
        if not env_file.is_file():
            pytest.fail(f"the dev stack's Kubernetes control plane is not up: {env_file} is missing")
        env = read_env(env_file)
        self.binary, self.kubeconfig = env["KUBECTL"], env["KUBECONFIG"]

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [self.binary, f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert not check or result.returncode == 0, f"{' '.join(argv)}:\n{result.stdout}\n{result.stderr}"
        return result


@pytest.fixture(scope="module")
def kubectl() -> Iterator[Kubectl]:
    run = Kubectl()
    phase = run("get", "namespace", NAMESPACE, "--ignore-not-found", "-o", "jsonpath={.status.phase}").stdout
    if phase == "Terminating":  # left by an earlier run
        run("wait", "--for=delete", f"namespace/{NAMESPACE}", "--timeout=90s")
        phase = ""
    existed = phase != ""
    if not existed:
        run("apply", "-f", str(MANIFESTS / "00-namespace.yaml"))
    try:
        yield run
    finally:
        if not existed:
            run("delete", "namespace", NAMESPACE, "--wait=true", "--timeout=90s")


def test_the_api_server_accepts_every_object(kubectl: Kubectl) -> None:
    applied = kubectl("apply", "--dry-run=server", "-f", str(MANIFESTS))
    done = [line for line in applied.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(done) == len(documents()), applied.stdout + applied.stderr
    assert "Warning" not in applied.stderr, applied.stderr


def test_the_role_grants_exactly_what_the_driver_calls() -> None:
    role = one("ClusterRole", "gluster-csi-node")
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "*" not in json.dumps(rule) and "resourceNames" not in rule and "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == DRIVER_GRANTS
    binding = one("ClusterRoleBinding", "gluster-csi-node")
    assert binding["roleRef"]["name"] == "gluster-csi-node"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "gluster-csi-node", "namespace": NAMESPACE}]
    assert [r for r in documents() if r["kind"] in ("Role", "ClusterRole")] == [role]


def test_the_csi_driver_object_matches_the_driver_and_the_gid_model() -> None:
    driver = one("CSIDriver", CsiSettings(node_id="n").driver_name)
    assert driver["spec"]["attachRequired"] is False
    assert driver["spec"]["podInfoOnMount"] is True
    assert driver["spec"]["fsGroupPolicy"] == "None"
    assert driver["spec"]["volumeLifecycleModes"] == ["Persistent"]


def test_the_daemonset_configures_a_driver_kubelet_can_reach(monkeypatch: pytest.MonkeyPatch) -> None:
    daemonset = one("DaemonSet", "gluster-csi-node")
    assert daemonset["metadata"]["namespace"] == NAMESPACE
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "gluster-csi-node"
    assert not pod.get("hostPID") and not pod.get("hostIPC")
    [container] = pod["containers"]
    assert not pod.get("initContainers"), "no sidecars, no init containers: the driver does it all"
    assert container["securityContext"] == {"privileged": True}

    for key in [k for k in os.environ if k.startswith("PROVISIONER_CSI__")]:
        monkeypatch.delenv(key)
    for variable in container["env"]:
        assert variable["name"].removeprefix("PROVISIONER_CSI__").lower() in CsiSettings.model_fields, variable
        monkeypatch.setenv(variable["name"], variable.get("value", "node-a"))
    settings = CsiSettings()
    assert settings.kubernetes_events and settings.kubeconfig is None
    assert container["ports"] == [{"name": "http", "containerPort": settings.http_port, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}

    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert all(host_paths[m["name"]] == path for path, m in mounts.items()), "host and container paths agree"

    def mounted(path: Path) -> dict[str, Any]:
        [mount] = [m for p, m in mounts.items() if path == Path(p) or path.is_relative_to(p)]
        return dict(mount)

    for path in (settings.socket_path.parent, settings.registration_path.parent, settings.state_path):
        assert "mountPropagation" not in mounted(path), path
    assert settings.path_roots == (Path("/var/lib/kubelet/pods"), Path("/var/lib/kubelet/plugins/kubernetes.io/csi"))
    for root in settings.path_roots:
        assert mounted(root)["mountPropagation"] == "Bidirectional", root
    assert mounted(Path("/dev/fuse"))
    bidirectional = {p for p, m in mounts.items() if m.get("mountPropagation") == "Bidirectional"}
    assert bidirectional == {str(r) for r in settings.path_roots}, "mounts propagate only where the driver mounts"
