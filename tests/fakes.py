"""A fake storage cluster behind the Executor protocol, for unit tests and fault injection only.

It models just enough node state (images, mounts, directories, gluster volumes) to answer the
provisioner's commands the way real nodes do, including gluster's XML verdicts.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from provisioner.delivery.outcome import Outcome
from provisioner.domain import Cluster, ClusterId, Device, DeviceId, Node, NodeId
from provisioner.errors import CommandFailed
from provisioner.events import catalog, models, results
from provisioner.events.envelope import Event, new_event
from provisioner.executor import Argv, CommandResult
from provisioner.handling.dispatch import RequestHandler
from provisioner.handling.kubernetes import KubernetesObjects
from provisioner.handling.retry import Retrying
from provisioner.planning.placement import NodeHealthView, ObservedSpace
from provisioner.settings import Settings
from provisioner.state import DesiredState, StateChange
from provisioner.storage.operations import VolumeOperations

Fault = Callable[[str, Argv], BaseException | CommandResult | None]
GiB = 1024**3


def cluster(*nodes: tuple[int, list[int]]) -> Cluster:
    """A cluster for the pure planners: nodes as (zone, [device capacities in GiB])."""
    return Cluster(
        id=ClusterId("c"),
        nodes=tuple(
            Node(
                id=NodeId(f"n{i}"),
                manage=f"10.0.0.{i}",
                storage=f"10.0.0.{i}",
                zone=zone,
                devices=tuple(
                    Device(id=DeviceId(f"n{i}d{j}"), name=f"/d{j}", capacity=cap * GiB) for j, cap in enumerate(caps)
                ),
            )
            for i, (zone, caps) in enumerate(nodes)
        ),
    )


class Intent:
    """The worker's IntentWriter: records state changes (applying them) and progress events."""

    def __init__(self, state: DesiredState) -> None:
        self.state = state
        self.recorded: list[StateChange] = []
        self.progress_events: list[Event] = []

    async def progress(self, event: Event, key: str) -> None:
        self.progress_events.append(event)

    async def record(self, changes: list[StateChange]) -> None:
        self.recorded += changes
        for change in changes:
            self.state.apply(change)


async def no_sleep(_: float) -> None:
    return None


class World:
    """The request handler against fake nodes: where every handler test starts.

    State changes of each outcome are applied as the lane applies them after its commit; the
    retry waits are recorded in ``sleeps`` instead of slept (jitter from a seeded generator)."""

    def __init__(
        self,
        nodes: int = 3,
        *,
        topology: models.LoadTopology | None = None,
        fake: FakeNodes | None = None,
        objects: KubernetesObjects | None = None,
        health: NodeHealthView | None = None,
        observed: ObservedSpace | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.nodes = fake or FakeNodes()
        self.state = DesiredState()
        self.intent = Intent(self.state)
        self.sleeps: list[float] = []
        self.settings = settings or Settings()
        retrying = Retrying(self.settings.worker, sleep=self._sleep, rng=random.Random(7))
        self.handler = RequestHandler(
            self.state,
            VolumeOperations(self.nodes, self.settings.storage),
            self.settings,
            objects=objects,
            health=health,
            observed=observed,
            retrying=retrying,
        )
        self.topology = topology or default_topology(nodes)

    async def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    async def handle(self, event: Event) -> Outcome:
        outcome = await self.handler.handle(event, self.intent)
        for change in outcome.changes:
            self.state.apply(change)
        return outcome

    async def load(self) -> Outcome:
        """Load the topology (probing and preparing the nodes), then forget those node commands, so a
        test's ``nodes.calls`` shows only what its own requests ran."""
        outcome = await self.handle(new_event(catalog.TOPOLOGY_LOAD_REQUESTED, self.topology, source="/t"))
        self.nodes.calls.clear()
        return outcome

    async def provision(self, **fields: object) -> Outcome:
        data = models.ProvisionVolume.model_validate({"cluster": "dev", "size": GiB, **fields})
        return await self.handle(new_event(catalog.PROVISION_REQUESTED, data, source="/t"))

    async def delete(self, **fields: object) -> Outcome:
        data = models.DeleteVolume.model_validate({"cluster": "dev", **fields})
        return await self.handle(new_event(catalog.DELETE_REQUESTED, data, source="/t"))

    async def expand(self, **fields: object) -> Outcome:
        data = models.ExpandVolume.model_validate({"cluster": "dev", **fields})
        return await self.handle(new_event(catalog.EXPAND_REQUESTED, data, source="/t"))


def failure(outcome: Outcome) -> results.RequestFailed:
    assert isinstance(outcome.result.data, results.RequestFailed), outcome.result.data
    return outcome.result.data


def provisioned(outcome: Outcome) -> results.VolumeOut:
    assert isinstance(outcome.result.data, results.VolumeProvisioned), outcome.result.data
    return outcome.result.data.volume


def default_topology(nodes: int = 3, devices: int = 1, *, zone_per_node: bool = False) -> models.LoadTopology:
    """Cluster ``dev``: nodes 10.0.0.1.. with file devices /srv/devices/dev1.. of 100 GiB each."""
    return models.LoadTopology.model_validate(
        {
            "cluster": "dev",
            "nodes": [
                {
                    "node": {
                        "hostnames": {"manage": [f"10.0.0.{i}"], "storage": [f"10.0.0.{i}"]},
                        "zone": i if zone_per_node else 1,
                    },
                    "devices": [
                        {"name": f"/srv/devices/dev{j}", "backend": "file", "capacity": 100 * GiB}
                        for j in range(1, devices + 1)
                    ],
                }
                for i in range(1, nodes + 1)
            ],
        }
    )


def xml(ret: int = 0, errstr: str = "", body: str = "") -> str:
    return (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<cliOutput><opRet>{ret}</opRet>'
        f"<opErrno>{0 if ret == 0 else 30800}</opErrno><opErrstr>{errstr}</opErrstr>{body}</cliOutput>"
    )


@dataclass
class FakeVolume:
    bricks: list[str]
    started: bool = False
    options: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeSnapshot:
    origin: str
    description: str
    volume: str  # gluster's hex snapshot volume name; its LVs are <volume>_0 beside each brick LV


class FakeNodes:
    def __init__(self) -> None:
        self.files: set[tuple[str, str]] = set()
        self.mounts: dict[tuple[str, str], str] = {}
        self.dirs: set[tuple[str, str]] = set()
        self.volumes: dict[str, FakeVolume] = {}
        self.calls: list[tuple[str, Argv]] = []
        self.faults: list[Fault] = []
        self.peers: set[str] = set()
        self.lvm: set[tuple[str, str]] = set()  # (host, physical volume or volume group) made by pvcreate/vgcreate
        self.volume_groups: dict[tuple[str, str], str] = {}  # (host, physical volume) -> its VG
        self.vg_size = 100 * GiB  # what vgs reports for every VG
        self.thin: dict[tuple[str, str], str] = {}  # (host, vg/lv) of thin pools ("") and thin LVs (their pool)
        self.held: dict[tuple[str, str], tuple[str, ...]] = {}  # (host, device) -> signatures wipefs lists
        self.fstab: set[tuple[str, str]] = set()  # (host, mount point) with a line in the node's fstab
        self.pending_heals: dict[str, int] = {}  # brick host:path -> entries its heal info reports
        self.snapshots: dict[str, FakeSnapshot] = {}
        self.origins: dict[tuple[str, str], str] = {}  # (host, vg/lv) of a thin snapshot -> its origin LV
        self.stripped: list[tuple[str, str, str]] = []  # (host, path, xattr) removed by setfattr -x

    async def run(self, host: str, argv: Argv, *, timeout: float, check: bool = True) -> CommandResult:
        self.calls.append((host, argv))
        for fault in self.faults:
            injected = fault(host, argv)
            if isinstance(injected, BaseException):
                raise injected
            if injected is not None:
                return injected
        status, out, err = self._execute(host, argv)
        result = CommandResult(host, argv, status, out, err)
        if check and status != 0:
            raise CommandFailed(host, argv, status, out, err)
        return result

    async def close(self) -> None:
        return None

    def _execute(self, host: str, argv: Argv) -> tuple[int, str, str]:
        words = [a for a in argv if a != "--"]
        match words:
            case ["mountpoint", "-q", path]:
                return (0 if (host, path) in self.mounts else 1), "", ""
            case ["mkdir", "-p", path]:
                self.dirs.add((host, path))
                return 0, "", ""
            case ["truncate", "-s", _, path]:
                self.files.add((host, path))
                return 0, "", ""
            case ["setfattr", "-x", name, path]:
                self.stripped.append((host, path, name))
                return 0, "", ""
            case ["setfattr", *_, path] | ["mkfs.xfs", *_, path]:
                return (0, "", "") if (host, path) in self.files else (1, "", f"{path}: No such file")
            case ["mount", "-o", _, image, path]:
                self.mounts[(host, path)] = image
                return 0, "", ""
            case ["umount", path]:
                return (0, "", "") if self.mounts.pop((host, path), None) else (32, "", "not mounted")
            case ["sync", "--file-system", _]:
                return 0, "", ""
            case ["chown" | "chmod", *_]:
                return 0, "", ""
            case ["rm", "-f", path]:
                self.files.discard((host, path))
                return 0, "", ""
            case ["rmdir", path]:
                self.dirs.discard((host, path))
                return 0, "", ""
            case ["sh", "-c", _, "sh", _, mount_point, _]:  # storage.commands.fstab_add
                self.fstab.add((host, mount_point))
                return 0, "", ""
            case ["sh", "-c", _, "sh", _, mount_point]:  # storage.commands.fstab_remove
                self.fstab.discard((host, mount_point))
                return 0, "", ""
            case ["gluster", "--mode=script", "--xml", _, "volume", *rest]:
                return 0, self._gluster(rest), ""
            case ["lvm", "pvs", _, _, device]:  # the PV's VG, blank for none
                if (host, device) not in self.lvm:
                    return 5, "", f"Failed to find physical volume {device}"
                return 0, self.volume_groups.get((host, device), ""), ""
            case ["lvm", "vgs", _, _, name]:
                return (0, name, "") if (host, name) in self.lvm else (5, "", f"Failed to find {name}")
            case ["lvm", "vgs", "--reportformat", "json", *_, vg]:
                if (host, vg) not in self.lvm:
                    return 5, "", f"Volume group {vg} not found"
                report = {"vg": [{"vg_name": vg, "vg_size": str(self.vg_size), "vg_free": str(self.vg_size)}]}
                return 0, json.dumps({"report": [report]}), ""
            case ["wipefs", "--json", device]:
                found = [
                    {"device": device, "offset": "0x0", "type": kind} for kind in self.held.get((host, device), ())
                ]
                return 0, json.dumps({"signatures": found}), ""
            case ["wipefs", "--all", device]:
                self.held.pop((host, device), None)
                return 0, "", ""
            case ["lvm", "lvcreate", *options, vg] if "thin-pool" in options:
                self.thin[(host, f"{vg}/{options[options.index('--name') + 1]}")] = ""
                return 0, "", ""
            case ["lvm", "lvcreate", *options, source] if "--snapshot" in options:
                vg, origin = source.split("/")
                lv = options[options.index("--name") + 1]
                self.thin[(host, f"{vg}/{lv}")] = self.thin[(host, source)]
                self.origins[(host, f"{vg}/{lv}")] = origin
                self.files.add((host, f"/dev/mapper/{vg}-{lv}"))
                return 0, "", ""
            case ["lvm", "lvs", _, "--options=lv_name", "--select", select, vg]:
                origin, prefix = re.fullmatch(r"origin=(\S+) && lv_name=~\^(\S+)", select).groups()  # type: ignore[union-attr]
                names = [
                    name.split("/")[1]
                    for (h, name), o in self.origins.items()
                    if h == host and name.startswith(f"{vg}/{prefix}") and o == origin
                ]
                return 0, "\n".join(names), ""
            case ["gluster", "--mode=script", "--xml", _, "snapshot", *rest]:
                return 0, self._snapshot(rest), ""
            case ["lvm", "lvcreate", *options]:
                vg, pool = options[options.index("--thin") + 1].split("/")
                lv = options[options.index("--name") + 1]
                if "--size" in options:
                    self.thin[(host, f"{vg}/{pool}")] = ""
                self.thin[(host, f"{vg}/{lv}")] = pool
                self.files.add((host, f"/dev/mapper/{vg}-{lv}"))
                return 0, "", ""
            case ["lvm", "lvs", _, "--options=lv_name", name]:
                return (0, name, "") if (host, name) in self.thin else (5, "", f"Failed to find {name}")
            case ["lvm", "lvs", _, "--options=thin_count", name]:
                if (host, name) not in self.thin:
                    return 5, "", f"Failed to find {name}"
                vg, pool = name.split("/")
                return 0, str(sum(1 for (h, lv), p in self.thin.items() if h == host and p == pool)), ""
            case ["lvm", "lvremove", *_, name]:
                self.thin.pop((host, name), None)
                vg, lv = name.split("/")
                self.files.discard((host, f"/dev/mapper/{vg}-{lv}"))
                return 0, "", ""
            case ["lvm", "pvresize", _, device]:
                return (0, "", "") if (host, device) in self.lvm else (5, "", f"Failed to find {device}")
            case ["lvm", "pvcreate", *_, device]:
                self.lvm.add((host, device))
                return 0, "", ""
            case ["lvm", "vgcreate", *_, vg, device]:
                self.lvm.update({(host, vg), (host, device)})
                self.volume_groups[(host, device)] = vg
                return 0, "", ""
            case ["gluster", "--mode=script", "--xml", _, "pool", "list"]:
                return 0, xml(0, ""), ""
            case ["gluster", "--mode=script", "--xml", _, "peer", "probe", peer]:
                if peer in self.peers:
                    return 0, xml(0, f"Host {peer} port 24007 already in peer list"), ""
                self.peers.add(peer)
                return 0, xml(), ""
            case ["gluster", "--mode=script", "--xml", _, "peer", "detach", peer]:
                self.peers.discard(peer)
                return 0, xml(), ""
        return 127, "", f"fake: unknown command {argv}"

    def _snapshot(self, rest: list[str]) -> str:
        match rest:
            case ["create", name, volume, "no-timestamp", "description", description]:
                if name in self.snapshots:
                    return xml(-1, f"Snapshot {name} already exists")
                if volume not in self.volumes:
                    return xml(-1, f"Volume ({volume}) does not exist")
                snap = self.snapshots[name] = FakeSnapshot(volume, description, uuid.uuid4().hex)
                for brick in self.volumes[volume].bricks:  # host:/root/vg_<dev>/brick_<id>/brick
                    host, _, path = brick.partition(":")
                    vg, lv = path.split("/")[-3:-1]
                    self.thin[(host, f"{vg}/{snap.volume}_0")] = self.thin[(host, f"{vg}/{lv}")]
                    self.origins[(host, f"{vg}/{snap.volume}_0")] = lv
                return xml()
            case ["info", name]:
                found = self.snapshots.get(name)
                if found is None:
                    return xml(-1, f"Snapshot ({name}) does not exist")
                body = (
                    f"<snapInfo><count>1</count><snapshots><snapshot><name>{name}</name><uuid>u</uuid>"
                    f"<description>{found.description}</description><snapVolume><name>{found.volume}</name>"
                    f"<status>Stopped</status><originVolume><name>{found.origin}</name></originVolume>"
                    "</snapVolume></snapshot></snapshots></snapInfo>"
                )
                return xml(body=body)
            case ["delete", name]:
                gone = self.snapshots.pop(name, None)
                if gone is None:
                    return xml(-1, f"Snapshot ({name}) does not exist")
                for key in [k for k in self.thin if k[1].split("/")[1].startswith(gone.volume)]:
                    del self.thin[key]
                    self.origins.pop(key, None)
                return xml()
        return xml(-1, f"fake: unknown snapshot command {rest}")

    def _gluster(self, rest: list[str]) -> str:
        match rest:
            case ["create", name, *spec]:
                if name in self.volumes:
                    return xml(-1, f"Volume {name} already exists")
                self.volumes[name] = FakeVolume(bricks=[s for s in spec if ":" in s])
                return xml()
            case ["set", name, key, value]:
                if name not in self.volumes:
                    return xml(-1, f"Volume {name} does not exist")
                self.volumes[name].options[key] = value
                return xml()
            case ["start", name]:
                if name not in self.volumes:
                    return xml(-1, f"Volume {name} does not exist")
                if self.volumes[name].started:
                    return xml(-1, f"Volume {name} already started")
                self.volumes[name].started = True
                return xml()
            case ["stop", name, *_]:
                if name not in self.volumes:
                    return xml(-1, f"Volume {name} does not exist")
                if not self.volumes[name].started:
                    return xml(-1, f"Volume {name} is not in the started state")
                self.volumes[name].started = False
                return xml()
            case ["add-brick", name, *new_bricks]:
                if name not in self.volumes:
                    return xml(-1, f"Volume {name} does not exist")
                self.volumes[name].bricks += new_bricks
                return xml()
            case ["replace-brick", name, old, new, "commit", "force"]:
                volume = self.volumes.get(name)
                if volume is None or old not in volume.bricks:
                    return xml(-1, f"volume {name}: brick {old} does not exist in volume")
                volume.bricks[volume.bricks.index(old)] = new
                return xml()
            case ["rebalance", name, "start"]:
                return xml() if name in self.volumes else xml(-1, f"Volume {name} does not exist")
            case ["delete", name]:
                if name not in self.volumes:
                    return xml(-1, f"Volume {name} does not exist")
                del self.volumes[name]
                return xml()
            case ["info", name]:
                volume = self.volumes.get(name)
                if volume is None:
                    return xml(-1, "Volume does not exist")
                options = "".join(
                    f"<option><name>{k}</name><value>{v}</value></option>" for k, v in volume.options.items()
                )
                bricks = "".join(
                    f"<brick><name>{b}</name><hostUuid>u</hostUuid><isArbiter>0</isArbiter></brick>"
                    for b in volume.bricks
                )
                body = (
                    f"<volInfo><volumes><volume><name>{name}</name><id>i</id><statusStr>"
                    f"{'Started' if volume.started else 'Created'}</statusStr><typeStr>Replicate</typeStr>"
                    f"<brickCount>{len(volume.bricks)}</brickCount><bricks>{bricks}</bricks>"
                    f"<options>{options}</options></volume></volumes></volInfo>"
                )
                return xml(body=body)
            case ["heal", name, "info"]:
                volume = self.volumes.get(name)
                if volume is None:
                    return xml(-1, f"Volume {name} does not exist")
                healed = "".join(
                    f"<brick hostUuid='u'><name>{b}</name><status>Connected</status>"
                    f"<numberOfEntries>{self.pending_heals.get(b, 0)}</numberOfEntries></brick>"
                    for b in volume.bricks
                )
                return xml(body=f"<healInfo><bricks>{healed}</bricks></healInfo>")
        return xml(-1, f"fake gluster: unsupported {rest}")
