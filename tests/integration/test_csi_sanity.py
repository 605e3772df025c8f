"""csi-sanity (kubernetes-csi/csi-test v5.6.0), the peers' CSI conformance suite, against the driver.

The driver runs as its own process with real FUSE mounts of real gluster volumes; csi-sanity's
directories live under a temporary root that the driver is told to accept
(``--allowed-path-root``: by default it accepts only kubelet's directory). Its node tests get their
volumes from a controller endpoint, which the driver does not have by design, so a test-only
controller that creates real gluster volumes stands in for the daemon
(``tests/integration/csi_fixture_controller.py``).

Every Identity and Node test must pass. The ones skipped are listed in ``EXPECTED_SKIPS`` with the
reason (the same list is in the README, "The CSI driver"); a skip not listed there, or a listed one
that passes, fails this test. The controller suites test a controller, not this driver: they are
skipped by name (``--ginkgo.skip``).
"""

from __future__ import annotations

import asyncio
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration import csi_fixture_controller
from tests.integration.csi_stack import REPO, Driver, GlusterNodes, mounts_under, remove_tree, short_tmpdir

pytestmark = pytest.mark.integration
SANITY_SCRIPT = REPO / "deploy" / "dev" / "csi-sanity.sh"
CONTROLLER_SUITES = r"\[Controller Server\]"
CONTROLLER_SUITES_TEXT = "[Controller Server]"

EXPECTED_SKIPS = {
    "Node Service should work": "needs CONTROLLER_SERVICE in the node plugin's own capabilities "
    "(CreateVolume + ControllerPublish + node calls); the driver has no controller by design",
    "Node Service should be idempotent": "the same test as 'should work', repeated: same reason",
}
"""Identity/Node specs csi-sanity skips, with the reason (also in the README)."""
SKIPPED_SUITES = {
    "GroupController Service": "no GroupController service: volume group snapshots are not offered "
    "(csi-sanity skips the suite itself: 'GroupControllerService not supported')",
}
"""Whole suites csi-sanity skips by itself because the driver does not offer the service."""


@dataclass(frozen=True)
class Spec:
    name: str
    status: str  # passed, skipped, failed
    message: str


def sanity_binary() -> Path:
    built = subprocess.run([str(SANITY_SCRIPT), "path"], capture_output=True, text=True, timeout=1800)
    if built.returncode != 0:
        pytest.fail(f"building csi-sanity failed:\n{built.stderr[-3000:]}")
    return Path(built.stdout.strip())


def junit_specs(report: Path) -> list[Spec]:
    specs = []
    for case in ET.parse(report).getroot().iter("testcase"):
        name = case.get("name", "").removeprefix("[It] ").strip()
        if name.startswith(("[BeforeSuite]", "[AfterSuite]", "[SynchronizedBeforeSuite]")):
            continue
        failure = case.find("failure")
        error = case.find("error")
        skipped = case.find("skipped")
        if failure is not None or error is not None:
            node = failure if failure is not None else error
            assert node is not None
            specs.append(Spec(name, "failed", (node.get("message") or "") + (node.text or "")[-2000:]))
        elif skipped is not None:
            specs.append(Spec(name, "skipped", skipped.get("message") or ""))
        else:
            specs.append(Spec(name, "passed", ""))
    return specs


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    path = short_tmpdir("csi-san-")
    yield path
    remove_tree(path)


async def test_csi_sanity_passes_every_identity_and_node_test(root: Path) -> None:
    binary = await asyncio.to_thread(sanity_binary)
    nodes = GlusterNodes.load()
    sanity_dir = root / "sanity"
    sanity_dir.mkdir()
    driver = Driver(
        root,
        args=["--node-id", "sanity-node", "--zone", "sanity-zone", "--allowed-path-root", str(sanity_dir)],
    )
    controller_socket = root / "controller.sock"
    server, controller = await csi_fixture_controller.serve(nodes, str(controller_socket))
    report = root / "junit.xml"
    output = root / "csi-sanity.log"
    driver.start()
    try:
        await driver.wait_ready()
        with output.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                str(binary),
                f"-csi.endpoint=unix://{driver.socket}",
                f"-csi.controllerendpoint=unix://{controller_socket}",
                f"-csi.mountdir={sanity_dir / 'mount'}",
                f"-csi.stagingdir={sanity_dir / 'staging'}",
                f"-csi.testvolumesize={1024**3}",
                f"-ginkgo.skip={CONTROLLER_SUITES}",
                f"-ginkgo.junit-report={report}",
                "-ginkgo.no-color",
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
            async with asyncio.timeout(1200):
                code = await process.wait()
    finally:
        await controller.delete_all()
        await server.stop(0)
        stopped = driver.stop()
    text = output.read_text(errors="replace")
    assert report.is_file(), f"csi-sanity wrote no report (exit {code}):\n{text[-4000:]}"
    specs = junit_specs(report)
    ours = [s for s in specs if s.name.startswith(("Node Service", "Identity Service"))]
    failed = [s for s in specs if s.status == "failed"]
    assert not failed, "\n\n".join(f"{s.name}:\n{s.message}" for s in failed) + f"\n\ndriver log:\n{driver.tail()}"
    assert code == 0, text[-4000:]
    skipped = {s.name: s.message for s in specs if s.status == "skipped"}
    not_run = {n for n in skipped if CONTROLLER_SUITES_TEXT in n}
    by_suite = {n for n in skipped if n.startswith(tuple(SKIPPED_SUITES))}
    assert set(skipped) - not_run - by_suite == set(EXPECTED_SKIPS), f"skips changed: {skipped}"
    assert all(s.status == "skipped" for s in specs if s.name.startswith(tuple(SKIPPED_SUITES)))
    passed = [s.name for s in ours if s.status == "passed"]
    assert len(passed) == len(ours) - len(EXPECTED_SKIPS), passed
    assert controller.created > 0 and controller.created == controller.deleted, "every volume csi-sanity made is gone"
    assert mounts_under(root) == []
    assert stopped == 0, driver.tail()
    print(f"\ncsi-sanity: {len(passed)} of {len(ours)} identity/node tests passed")
    for name in passed:
        print(f"  passed: {name}")
    for name in sorted(set(skipped) - not_run):
        print(f"  skipped: {name}: {skipped[name]}")
    print(f"controller suites not run ({CONTROLLER_SUITES_TEXT}): {len(not_run)} specs")
    print(f"real gluster volumes created and deleted by the fixture controller: {controller.created}")
