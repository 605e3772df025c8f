"""Parsers for what the nodes print: ``gluster --xml`` documents and CLI error text.

gluster exits 0 with ``--xml`` even when an operation failed, so the verdict is ``opRet`` /
``opErrstr`` inside the document. Parsers are pure and strict: output that is not what gluster
prints raises ``UnparsableOutput`` naming what was missing, instead of being half-understood.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

_BUSY = re.compile(r"Another transaction is in progress", re.IGNORECASE)
_MISSING = re.compile(r"(does not exist|not found)", re.IGNORECASE)
_EXISTS = re.compile(r"already exists", re.IGNORECASE)
_ALREADY_STARTED = re.compile(r"already started", re.IGNORECASE)
_NOT_STARTED = re.compile(r"is not in the started state", re.IGNORECASE)
_UNREACHABLE = re.compile(
    r"(not connected|Connection failed|Request timed out|Transport endpoint|Locking failed|peers are down)",
    re.IGNORECASE,
)


class UnparsableOutput(ValueError):
    """Node output that does not have the expected shape."""


@dataclass(frozen=True, slots=True)
class OpResult:
    """The verdict of one gluster CLI call."""

    ok: bool
    errno: int
    message: str

    @property
    def busy(self) -> bool:
        return _BUSY.search(self.message) is not None

    @property
    def missing(self) -> bool:
        return _MISSING.search(self.message) is not None

    @property
    def exists(self) -> bool:
        return _EXISTS.search(self.message) is not None

    @property
    def already_started(self) -> bool:
        return _ALREADY_STARTED.search(self.message) is not None

    @property
    def not_started(self) -> bool:
        return _NOT_STARTED.search(self.message) is not None

    @property
    def unreachable(self) -> bool:
        return _UNREACHABLE.search(self.message) is not None


@dataclass(frozen=True, slots=True)
class BrickInfo:
    host: str
    path: str
    host_uuid: str
    arbiter: bool


@dataclass(frozen=True, slots=True)
class VolumeInfo:
    name: str
    id: str
    status: str  # "Created", "Started", "Stopped"
    type: str  # "Replicate", "Distribute", "Disperse", "Distributed-Replicate", ...
    brick_count: int
    bricks: tuple[BrickInfo, ...]
    options: dict[str, str]


def _root(xml_text: str) -> ET.Element:
    try:
        return ET.fromstring(xml_text)  # noqa: S314
    except ET.ParseError as e:
        raise UnparsableOutput(f"not an XML document: {e}: {xml_text[:200]!r}") from e


def _text(element: ET.Element, path: str) -> str:
    found = element.find(path)
    if found is None:
        raise UnparsableOutput(f"gluster XML has no <{path}>")
    return (found.text or "").strip()


def parse_op_result(stdout: str, stderr: str = "") -> OpResult:
    """Verdict of a ``--xml`` call. Plain-text output (glusterd down) becomes a failure."""
    text = stdout.strip()
    if not text.startswith("<"):
        message = (stderr.strip() or text or "gluster printed nothing").splitlines()[-1]
        return OpResult(ok=False, errno=-1, message=message)
    root = _root(text)
    ret = int(_text(root, "opRet") or "0")
    errno = int(_text(root, "opErrno") or "0")
    message = _text(root, "opErrstr")
    return OpResult(ok=ret == 0, errno=errno, message=message)


def parse_volume_info(xml_text: str) -> list[VolumeInfo]:
    """All volumes in a ``volume info --xml`` document (an empty list when there are none)."""
    root = _root(xml_text)
    volumes = []
    for vol in root.iterfind("volInfo/volumes/volume"):
        bricks = []
        for brick in vol.iterfind("bricks/brick"):
            name = _text(brick, "name")
            host, sep, path = name.partition(":")
            if not sep:
                raise UnparsableOutput(f"brick name {name!r} is not host:/path")
            bricks.append(
                BrickInfo(
                    host=host,
                    path=path,
                    host_uuid=_text(brick, "hostUuid"),
                    arbiter=_text(brick, "isArbiter") == "1",
                )
            )
        options = {_text(o, "name"): _text(o, "value") for o in vol.iterfind("options/option")}
        volumes.append(
            VolumeInfo(
                name=_text(vol, "name"),
                id=_text(vol, "id"),
                status=_text(vol, "statusStr"),
                type=_text(vol, "typeStr"),
                brick_count=int(_text(vol, "brickCount")),
                bricks=tuple(bricks),
                options=options,
            )
        )
    return volumes


def parse_getfattr_dump(text: str) -> dict[str, dict[str, str]]:
    """``getfattr --absolute-names -d`` output: path -> {attribute: value} (quoted text values only)."""
    files: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in text.splitlines():
        if line.startswith("# file: "):
            current = files.setdefault(line[len("# file: ") :], {})
        elif current is not None and "=" in line:
            name, _, value = line.partition("=")
            if len(value) >= 2 and value[0] == value[-1] == '"':
                current[name] = value[1:-1]
    return files


def parse_findmnt(text: str) -> list[tuple[str, str]]:
    """``findmnt -rn -o TARGET,SOURCE``: (target, source) pairs with ``\\xNN`` escapes decoded."""

    def unescape(field: str) -> str:
        return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), field)

    mounts = []
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) >= 2:
            mounts.append((unescape(fields[0]), unescape(fields[1])))
    return mounts


def parse_lvs_tags(text: str) -> list[tuple[str, str, dict[str, str]]]:
    """``lvs --reportformat json -o lv_name,vg_name,lv_tags``: (vg, lv, {tag key: value}) for key=value tags."""
    try:
        report = json.loads(text)
    except ValueError as e:
        raise UnparsableOutput(f"lvs did not print JSON: {e}: {text[:200]!r}") from e
    lvs = []
    for section in report.get("report", []):
        for lv in section.get("lv", []):
            tags = dict(tag.partition("=")[::2] for tag in str(lv.get("lv_tags", "")).split(",") if "=" in tag)
            lvs.append((str(lv.get("vg_name", "")), str(lv.get("lv_name", "")), tags))
    return lvs


def parse_df_space(text: str) -> tuple[int, int]:
    """``df -B1 --output=size,avail``: (size, available) bytes."""
    lines = [line.split() for line in text.strip().splitlines()]
    if len(lines) != 2 or len(lines[1]) != 2 or not all(field.isdigit() for field in lines[1]):
        raise UnparsableOutput(f"df printed no size and avail: {text[:200]!r}")
    return int(lines[1][0]), int(lines[1][1])


def parse_vg_space(text: str) -> tuple[int, int]:
    """``vgs --reportformat json --units b --nosuffix -o vg_name,vg_size,vg_free`` of one VG: (size, free)."""
    try:
        [vg] = json.loads(text)["report"][0]["vg"]
        return int(vg["vg_size"]), int(vg["vg_free"])
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise UnparsableOutput(f"vgs printed no single VG with size and free: {text[:200]!r}") from e


def parse_signatures(text: str) -> list[str]:
    """``wipefs --json``: each signature as ``type at offset`` (e.g. ``xfs at 0x0``), in its order."""
    try:
        listed = json.loads(text)["signatures"] if text.strip() else []
        found = [f"{str(s['type'])[:32]} at {str(s['offset'])[:24]}" for s in listed]
    except (ValueError, KeyError, TypeError) as e:
        raise UnparsableOutput(f"wipefs printed no signature list: {text[:200]!r}") from e
    return found


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    name: str
    description: str
    snapshot_volume: str  # the hex name of gluster's snapshot volume (its LVs are <this>_<n>)
    origin: str  # the volume it was taken of


SNAPSHOT_VOLUME = re.compile(r"^[0-9a-f]{32}$")


def parse_snapshot_info(xml_text: str) -> list[SnapshotInfo]:
    """``snapshot info <name> --xml``: each snapshot with its description, snapshot volume and origin."""
    root = _root(xml_text)
    found = []
    for snap in root.iterfind("snapInfo/snapshots/snapshot"):
        volume = snap.find("snapVolume")
        if volume is None:
            raise UnparsableOutput("gluster snapshot info has no <snapVolume>")
        snapshot_volume = _text(volume, "name")
        if SNAPSHOT_VOLUME.fullmatch(snapshot_volume) is None:
            raise UnparsableOutput(f"snapshot volume name {snapshot_volume[:80]!r} is not 32 hex digits")
        found.append(
            SnapshotInfo(
                name=_text(snap, "name"),
                description=(snap.findtext("description") or "").strip(),
                snapshot_volume=snapshot_volume,
                origin=_text(volume, "originVolume/name"),
            )
        )
    return found


@dataclass(frozen=True, slots=True)
class BrickHeal:
    host: str
    path: str
    connected: bool
    pending: int | None  # entries still to heal; None when the brick does not answer ("-")


def parse_heal_info(xml_text: str) -> list[BrickHeal]:
    """``volume heal <vol> info --xml``: per brick, whether it is connected and its pending entries."""
    root = _root(xml_text)
    bricks = []
    for brick in root.iterfind("healInfo/bricks/brick"):
        host, sep, path = _text(brick, "name").partition(":")
        if not sep:
            raise UnparsableOutput(f"heal info brick name {host!r} is not host:/path")
        entries = (brick.findtext("numberOfEntries") or "").strip()
        bricks.append(
            BrickHeal(
                host=host,
                path=path,
                connected=(brick.findtext("status") or "").strip() == "Connected",
                pending=int(entries) if entries.isdigit() else None,
            )
        )
    return bricks
