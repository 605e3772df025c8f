"""The committed CSI stubs are what deploy/dev/csi-stubs.sh generates from the pinned protos.

Regenerates into a temporary directory (the protos come from the Go module proxy, the generators
are the pinned grpcio-tools and mypy-protobuf of the test extra) and compares byte for byte, so a
version bump without regeneration, or a hand edit of generated code, fails here.
"""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.csi_stack import REPO

pytestmark = pytest.mark.integration
COMMITTED = REPO / "provisioner" / "csi" / "proto"


def test_committed_stubs_match_a_fresh_generation(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    generated = subprocess.run(
        [str(REPO / "deploy" / "dev" / "csi-stubs.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert generated.returncode == 0, generated.stderr
    names = sorted(p.name for p in COMMITTED.iterdir() if p.suffix in {".py", ".pyi"})
    assert names == sorted(p.name for p in tmp_path.iterdir()), "the generated file set changed"
    _, mismatch, errors = filecmp.cmpfiles(COMMITTED, tmp_path, names, shallow=False)
    assert not mismatch and not errors, f"regenerate with deploy/dev/csi-stubs.sh: {mismatch + errors} differ"
