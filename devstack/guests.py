"""Access to the QEMU storage guests of the local stack (``deploy/dev/guests.sh``).

The guests are Debian systems with real virtio disks (``/dev/vdb``, ``/dev/vdc``), for what the
namespace nodes cannot do: device-mapper, so LVM thin provisioning. They form their own trusted
pool. If they are not up, ``load_guests`` starts them; if that fails, the test fails with the
reason (there are no skips).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from devstack.stack import DEV_STATE, REPO, read_env
from provisioner.executor.ssh import SshExecutor, SshOptions

GUESTS_SH = REPO / "deploy" / "dev" / "guests.sh"
GUESTS_ENV = DEV_STATE / "guests" / "env"


@dataclass(frozen=True)
class Guests:
    env: dict[str, str]

    @property
    def nodes(self) -> list[str]:
        """The guests' addresses, first guest first (10.77.0.21, ...)."""
        return self.env["GUEST_NODES"].split(",")

    @property
    def names(self) -> list[str]:
        return self.env["GUEST_NAMES"].split(",")

    @property
    def disks(self) -> list[str]:
        """The empty data disks every guest has (/dev/vdb, /dev/vdc)."""
        return self.env["GUEST_DISKS"].split(",")

    @property
    def known_hosts(self) -> Path:
        return Path(self.env["GUEST_KNOWN_HOSTS"])

    @property
    def client_key(self) -> Path:
        return Path(self.env["GUEST_SSH_KEY"])

    def ssh(self, known_hosts: Path | None = None) -> SshExecutor:
        return SshExecutor(
            SshOptions(
                user="root",
                client_key=self.client_key,
                known_hosts=known_hosts or self.known_hosts,
                connect_timeout=10,
            )
        )

    def daemon_env(self) -> dict[str, str]:
        """What a daemon needs to manage the guests: their host keys, and the real /etc/fstab (so a
        rebooted guest mounts its bricks again)."""
        return {
            "PROVISIONER_SSH__KNOWN_HOSTS": str(self.known_hosts),
            "PROVISIONER_SSH__KEY_FILE": str(self.client_key),
            "PROVISIONER_STORAGE__FSTAB": "/etc/fstab",
        }

    async def scrub(self) -> None:
        """Leave the guests as ``up`` made them: no client mount, no gluster snapshot or volume, no
        brick mount or fstab line, and data disks without any signature. The guests exist only for
        tests, and their data disks only for bricks, so anything on them is a test's leftover (a run
        cut off mid-way)."""
        ssh = self.ssh()
        try:
            for node in self.nodes:
                await ssh.run(node, ("sh", "-c", SCRUB_SCRIPT, "sh", *self.disks), timeout=600)
        finally:
            await ssh.close()

    def reboot(self, name: str, *, without_disks: tuple[str, ...] = (), hard: bool = False) -> None:
        """Power guest ``name`` off (ACPI, or a power cut with ``hard``) and start it again, optionally
        with data disks (``vdb``/``vdc``) detached; returns once it answers and its peers are connected.

        The guest names its disks in probe order, as real hardware does: without ``vdc`` its vdb is
        still ``/dev/vdb``, but without ``vdb`` the vdc disk appears as ``/dev/vdb``. The stable name is
        ``/dev/disk/by-id/virtio-gs-<guest>-<disk>``."""
        args = [str(GUESTS_SH), "reboot", name]
        for disk in without_disks:
            args += ["--without-disk", disk]
        if hard:
            args.append("--hard")
        run_script(*args, timeout=900)


SCRUB_SCRIPT = r"""
awk '$3 == "fuse.glusterfs" { print $2 }' /proc/mounts | while read -r m; do umount -l "$m"; done
gluster --mode=script snapshot delete all >/dev/null 2>&1 || true
for volume in $(gluster --mode=script volume list 2>/dev/null | grep -v '^No volumes'); do
    gluster --mode=script volume stop "$volume" force >/dev/null 2>&1 || true
    gluster --mode=script volume delete "$volume" >/dev/null
done
pkill -x glusterfsd && sleep 1  # bricks of a volume that could not be stopped (a peer down) hold their disks
awk '$2 ~ "^(/var/lib/provisioner/mounts|/run/gluster/snaps)/" { print $2 }' /proc/mounts |
    while read -r m; do umount -l "$m"; done
sed -i '\#^[^ ]* /var/lib/provisioner/mounts/#d' /etc/fstab
rm -rf /var/lib/provisioner/mounts
for disk; do
    for vg in $(lvm pvs --noheadings -o vg_name "$disk" 2>/dev/null); do lvm vgremove -ff -y "$vg" >/dev/null; done
    lvm pvremove -ff -y "$disk" >/dev/null 2>&1 || true
    wipefs -a -q "$disk"
done
"""
"""Run on each guest with its data disks as arguments (all of them constant: no value of a test)."""


def run_script(*args: str, timeout: float) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=dict(os.environ))
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(args)}` failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return done.stdout


def load_guests() -> Guests:
    status = subprocess.run([str(GUESTS_SH), "status"], capture_output=True, text=True, timeout=120)
    if status.returncode != 0 or not GUESTS_ENV.is_file():
        run_script(str(GUESTS_SH), "up", timeout=1800)
    return Guests(env=read_env(GUESTS_ENV))
