"""The manifests in deploy/kubernetes/ are accepted by a real API server, grant least privilege, configure a valid daemon.

* The real kube-apiserver of the dev control plane validates every object with ``kubectl apply
  --dry-run=server`` (schema, defaulting, admission including Pod Security ``restricted``). The
  namespaced objects need their namespace to exist, so it is created for real first and deleted at the
  end, unless it was already there.
* The roles grant exactly the verbs the daemon and the watcher use: no wildcard, no Secrets.
* The ConfigMap loads into :class:`provisioner.settings.Settings` and agrees with the Deployments, the
  Secret and the StorageClass, whose parameters the watcher's parser accepts.

kubectl is built by ``deploy/dev/kube.sh install`` (``up`` builds it too); its path is ``KUBECTL=`` in
``$DEV_STATE/kube/env``. A missing kubectl or control plane fails the test with the reason; nothing skips.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML comes with kubernetes-asyncio; no stubs installed
from pydantic import BaseModel

from devstack.kube import KUBE_STATE, REPO, ensure_kube
from provisioner.events import models
from provisioner.settings import ENV_PREFIX, Settings
from provisioner.watch.storage_class import class_parameters

pytestmark = pytest.mark.integration

MANIFESTS = REPO / "deploy" / "kubernetes"
SECRET_TEMPLATE = MANIFESTS / "05-secret-ssh.yaml.template"
NAMESPACE = "gluster-provisioner"
KUBECTL_TIMEOUT = 120.0
NAMESPACE_GONE_TIMEOUT = 90

Manifest = dict[str, Any]
# (apiGroup, resource) -> verbs
Grants = dict[tuple[str, str], frozenset[str]]

DAEMON_GRANTS: Grants = {
    ("", "persistentvolumes"): frozenset({"get", "create", "patch", "delete"}),
    ("", "persistentvolumeclaims"): frozenset({"get", "patch"}),
    ("", "persistentvolumeclaims/status"): frozenset({"patch"}),
    ("", "endpoints"): frozenset({"get", "create", "patch", "delete"}),
    ("", "services"): frozenset({"get", "create", "patch", "delete"}),
    ("", "events"): frozenset({"create", "patch"}),
}
WATCHER_GRANTS: Grants = {
    ("", "persistentvolumeclaims"): frozenset({"get", "list", "watch", "patch"}),
    ("", "persistentvolumes"): frozenset({"get", "list", "watch"}),
    ("storage.k8s.io", "storageclasses"): frozenset({"get", "list", "watch"}),
    ("", "events"): frozenset({"create", "patch"}),
}
WATCHER_LEASE_GRANTS: Grants = {("coordination.k8s.io", "leases"): frozenset({"get", "create", "update"})}


# --- reading the manifests ---------------------------------------------------------------------


def load(path: Path) -> list[Manifest]:
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    for doc in documents:
        assert isinstance(doc, dict) and {"apiVersion", "kind", "metadata"} <= doc.keys(), f"{path.name}: {doc!r}"
    return documents


def manifests() -> list[Manifest]:
    """Every object `kubectl apply -f deploy/kubernetes/` applies (it reads *.yaml, *.yml and *.json)."""
    files = sorted(p for p in MANIFESTS.iterdir() if p.suffix in {".yaml", ".yml", ".json"})
    assert files, f"no manifests in {MANIFESTS}"
    return [doc for path in files for doc in load(path)]


def one(documents: list[Manifest], kind: str, name: str) -> Manifest:
    found = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_spec(documents: list[Manifest], deployment: str) -> dict[str, Any]:
    spec: dict[str, Any] = one(documents, "Deployment", deployment)["spec"]["template"]["spec"]
    return spec


def grants(role: Manifest) -> Grants:
    """The role's rules as (apiGroup, resource) -> verbs, after checking nothing in them is broad."""
    name = f"{role['kind']} {role['metadata']['name']}"
    merged: dict[tuple[str, str], frozenset[str]] = {}
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule, f"{name} grants non-resource URLs: {rule}"
        assert "resourceNames" not in rule, f"{name}: unexpected resourceNames in {rule}"
        for key in ("apiGroups", "resources", "verbs"):
            assert rule.get(key), f"{name}: rule without {key}: {rule}"
            assert "*" not in rule[key], f"{name} has a wildcard in {key}: {rule}"
        assert not {"secrets", "secrets/*"} & set(rule["resources"]), f"{name} grants access to Secrets: {rule}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                merged[group, resource] = merged.get((group, resource), frozenset()) | frozenset(rule["verbs"])
    return merged


def bound_subjects(documents: list[Manifest], kind: str, role: str) -> list[tuple[str, str, str]]:
    """(kind, namespace, name) of every subject bound to the role ``kind``/``role``."""
    binding_kind = "ClusterRoleBinding" if kind == "ClusterRole" else "RoleBinding"
    return [
        (subject["kind"], subject.get("namespace", ""), subject["name"])
        for binding in documents
        if binding["kind"] == binding_kind
        and binding["roleRef"]
        == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": kind,
            "name": role,
        }
        for subject in binding["subjects"]
    ]


# --- kubectl -----------------------------------------------------------------------------------


def cache_dir() -> Path:
    if "CACHE_DIR" in os.environ:
        return Path(os.environ["CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gluster-provisioner"


def find_kubectl() -> Path:
    """kubectl as built by kube.sh: ``KUBECTL=`` of its env file, else the binary cache."""
    env_file = KUBE_STATE / "env"
    candidates: list[Path] = []
    if env_file.is_file():
        for line in env_file.read_text().splitlines():
            if line.startswith("KUBECTL="):
                candidates.append(Path(line.removeprefix("KUBECTL=")))
    go_mod = (REPO / "deploy" / "dev" / "k8sbins" / "go.mod").read_text()
    version = re.search(r"^\s*k8s\.io/kubernetes (v\d+\.\d+\.\d+)\s*$", go_mod, re.MULTILINE)
    assert version, "cannot read the k8s.io/kubernetes version from deploy/dev/k8sbins/go.mod"
    candidates.append(cache_dir() / f"k8s-{version[1]}" / "kubectl")
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    pytest.fail(f"kubectl not found (looked at {', '.join(map(str, candidates))}); run deploy/dev/kube.sh install")


class Kubectl:
    def __init__(self, binary: Path, kubeconfig: Path) -> None:
        self.binary, self.kubeconfig = binary, kubeconfig

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(self.binary), f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=KUBECTL_TIMEOUT)
        if check:
            assert result.returncode == 0, (
                f"{' '.join(argv)} exited {result.returncode}\n--- stdout ---\n{result.stdout}"
                f"\n--- stderr ---\n{result.stderr}"
            )
        return result


@pytest.fixture(scope="module")
def kubectl() -> Kubectl:
    kubeconfig = ensure_kube()  # `up` also builds a missing kubectl
    return Kubectl(find_kubectl(), kubeconfig)


@pytest.fixture
def namespace(kubectl: Kubectl) -> Iterator[str]:
    """The manifests' namespace, existing for real (a dry run of its creation makes nothing)."""
    phase = kubectl("get", "namespace", NAMESPACE, "-o", "jsonpath={.status.phase}", "--ignore-not-found").stdout
    if phase == "Terminating":  # left by an earlier run; the namespace controller is still emptying it
        kubectl("wait", "--for=delete", f"namespace/{NAMESPACE}", f"--timeout={NAMESPACE_GONE_TIMEOUT}s")
        phase = ""
    created = phase == ""
    if created:
        kubectl("apply", "-f", str(MANIFESTS / "00-namespace.yaml"))
    try:
        yield NAMESPACE
    finally:
        if created:
            kubectl("delete", "namespace", NAMESPACE, "--wait=true", f"--timeout={NAMESPACE_GONE_TIMEOUT}s")


# --- tests -------------------------------------------------------------------------------------


def test_the_api_server_accepts_every_manifest(kubectl: Kubectl, namespace: str) -> None:
    applied = kubectl("apply", "--dry-run=server", "-f", str(MANIFESTS), "-f", str(SECRET_TEMPLATE))
    expected = len(manifests()) + len(load(SECRET_TEMPLATE))
    done = [line for line in applied.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(done) == expected, f"expected {expected} objects applied, got:\n{applied.stdout}\n{applied.stderr}"
    # Pod Security admission only warns for Deployments; in a `restricted` namespace any warning is a defect.
    assert "Warning" not in applied.stderr, applied.stderr


def test_roles_grant_exactly_what_the_processes_use() -> None:
    documents = manifests()
    roles = [d for d in documents if d["kind"] in {"Role", "ClusterRole"}]
    assert sorted((r["kind"], r["metadata"]["name"]) for r in roles) == [
        ("ClusterRole", "gluster-provisioner"),
        ("ClusterRole", "gluster-provisioner-watch"),
        ("Role", "gluster-provisioner-watch-lease"),
    ]
    assert grants(one(documents, "ClusterRole", "gluster-provisioner")) == DAEMON_GRANTS
    assert grants(one(documents, "ClusterRole", "gluster-provisioner-watch")) == WATCHER_GRANTS
    lease_role = one(documents, "Role", "gluster-provisioner-watch-lease")
    assert lease_role["metadata"]["namespace"] == NAMESPACE
    assert grants(lease_role) == WATCHER_LEASE_GRANTS

    daemon_sa = ("ServiceAccount", NAMESPACE, "gluster-provisioner")
    watcher_sa = ("ServiceAccount", NAMESPACE, "gluster-provisioner-watch")
    assert bound_subjects(documents, "ClusterRole", "gluster-provisioner") == [daemon_sa]
    assert bound_subjects(documents, "ClusterRole", "gluster-provisioner-watch") == [watcher_sa]
    assert bound_subjects(documents, "Role", "gluster-provisioner-watch-lease") == [watcher_sa]
    for _, _, account in (daemon_sa, watcher_sa):
        assert one(documents, "ServiceAccount", account)["automountServiceAccountToken"] is True
    assert pod_spec(documents, "gluster-provisioner")["serviceAccountName"] == "gluster-provisioner"
    assert pod_spec(documents, "gluster-provisioner-watch")["serviceAccountName"] == "gluster-provisioner-watch"
    # The SSH key reaches the daemon only, as a read-only volume; the watcher sees no Secret at all.
    assert not [v for v in pod_spec(documents, "gluster-provisioner-watch").get("volumes", []) if "secret" in v]


def field_of(key: str) -> tuple[str, ...]:
    """The Settings field path a ``PROVISIONER_<GROUP>__<FIELD>`` variable sets; fails on an unknown one.

    pydantic-settings ignores unknown top-level variables, so a misspelt key would otherwise pass.
    """
    assert key.startswith(ENV_PREFIX), key
    path = tuple(part.lower() for part in key.removeprefix(ENV_PREFIX).split("__"))
    model: type[BaseModel] = Settings
    for depth, part in enumerate(path):
        assert part in model.model_fields, f"{key}: {model.__name__} has no field {part!r}"
        annotation = model.model_fields[part].annotation
        if depth < len(path) - 1:
            assert isinstance(annotation, type) and issubclass(annotation, BaseModel), f"{key}: {part} is no group"
            model = annotation
    return path


def test_the_config_map_is_valid_settings_and_matches_the_other_manifests(monkeypatch: pytest.MonkeyPatch) -> None:
    documents = manifests()
    data: dict[str, str] = one(documents, "ConfigMap", "gluster-provisioner-settings")["data"]
    assert all(isinstance(v, str) for v in data.values()), data
    for variable in [v for v in os.environ if v.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(variable)
    for key, value in data.items():
        field_of(key)
        monkeypatch.setenv(key, value)

    settings = Settings()

    assert settings.kubernetes.enabled is True
    assert settings.kubernetes.kubeconfig is None  # in-cluster: the pod's service account
    assert settings.kubernetes.namespace == NAMESPACE == one(documents, "Namespace", NAMESPACE)["metadata"]["name"]
    assert settings.log_level == "INFO"
    assert settings.kafka.bootstrap == data["PROVISIONER_KAFKA__BOOTSTRAP"]
    storage_class = one(documents, "StorageClass", "glusterfs-replica3")
    assert storage_class["provisioner"] == settings.kubernetes.provisioner_name
    assert storage_class["provisioner"] == data["PROVISIONER_KUBERNETES__PROVISIONER_NAME"]
    parameters = class_parameters("glusterfs-replica3", storage_class["parameters"])
    assert (parameters.cluster, parameters.durability) == ("dev", models.ReplicateSpec(replica=3))
    assert (parameters.gid_min, parameters.gid_max, parameters.source) == (40000, 50000, "csi")

    # Both processes take the ConfigMap whole and serve HTTP on its port.
    for deployment in ("gluster-provisioner", "gluster-provisioner-watch"):
        (container,) = pod_spec(documents, deployment)["containers"]
        assert container["envFrom"] == [{"configMapRef": {"name": "gluster-provisioner-settings"}}]
        assert container["ports"] == [{"name": "http", "containerPort": settings.http.port, "protocol": "TCP"}]

    # The SSH settings name the files of the Secret, where the daemon mounts it.
    daemon = pod_spec(documents, "gluster-provisioner")
    (mount,) = [m for m in daemon["containers"][0]["volumeMounts"] if m["name"] == "ssh"]
    (volume,) = [v for v in daemon["volumes"] if v["name"] == "ssh"]
    assert mount["readOnly"] is True
    assert volume["secret"] == {"secretName": "gluster-provisioner-ssh", "defaultMode": 0o400}
    (secret,) = load(SECRET_TEMPLATE)
    assert (secret["kind"], secret["metadata"]["name"], secret["type"]) == (
        "Secret",
        "gluster-provisioner-ssh",
        "Opaque",
    )
    mounted = {Path(mount["mountPath"]) / name for name in secret["stringData"]}
    assert mounted == {settings.ssh.key_file, settings.ssh.known_hosts}
