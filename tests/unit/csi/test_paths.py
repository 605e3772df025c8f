"""Which paths a request may name: absolute, normalised, strictly below an allowed root, no symlink escape."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.csi.errors import InvalidArgument
from provisioner.csi.paths import checked_path

ROOTS = (Path("/var/lib/kubelet"),)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "missing"),
        ("var/lib/kubelet/pods/x", "not an absolute path"),
        ("some/path", "not an absolute path"),
        ("/var/lib/kubelet/pods/../../../etc", "not normalised"),
        ("/var/lib/kubelet/./pods", "not normalised"),
        ("/var/lib/kubelet//pods", "not normalised"),
        ("//var/lib/kubelet/pods", "not normalised"),
        ("/var/lib/kubelet/pods/", "not normalised"),
        ("/var/lib/kubelet", "outside"),
        ("/var/lib/kubelet-evil/pods", "outside"),
        ("/etc/kubernetes", "outside"),
        ("/", "outside"),
        ("/var/lib/kubelet/pods/x\x00y", "not a usable path"),
        ("/var/lib/kubelet/" + "a" * 5000, "not a usable path"),
    ],
)
def test_refused_paths(value: str, problem: str) -> None:
    with pytest.raises(InvalidArgument, match=problem) as raised:
        checked_path("target_path", value, ROOTS)
    assert raised.value.field == "target_path"


def test_accepted_paths() -> None:
    value = "/var/lib/kubelet/pods/1b2c/volumes/kubernetes.io~csi/pvc-1/mount"
    assert checked_path("target_path", value, ROOTS) == Path(value)


def test_symlink_leaving_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "kubelet"
    (root / "pods").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "pods" / "escape").symlink_to(outside)
    assert checked_path("target_path", str(root / "pods" / "mount"), [root]) == root / "pods" / "mount"
    with pytest.raises(InvalidArgument, match="symlink"):
        checked_path("target_path", str(root / "pods" / "escape" / "mount"), [root])


def test_no_roots_refuses_everything() -> None:
    with pytest.raises(InvalidArgument, match="none configured"):
        checked_path("staging_target_path", "/var/lib/kubelet/x", [])
