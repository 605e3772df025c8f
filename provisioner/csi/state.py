"""What this node has staged: one small JSON record per volume id, in the driver's own directory.

Kubelet asks about a volume by id and path only (NodeGetVolumeStats, NodeExpandVolume,
NodeGetVolumeHealth), while the mount table knows volumes by name (``server:/volume``). The record
written at NodeStage joins the two, so those calls can answer NOT_FOUND when the path holds another
volume, and health checks know where a volume is staged. Records live under
``<kubelet root>/plugins/<driver>/volumes`` (a hostPath), so they survive a restart of the driver's
pod while the mounts they describe stay in place.

The mount table stays the truth about what is mounted: a record only says what was asked. A missing
record is not an error for unstage/unpublish (they go by path), and a record without its mount is
reported as a health problem, not trusted.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from provisioner.csi.attributes import VolumeSource, valid_volume_id

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StagedVolume:
    volume_id: str
    volume: str
    servers: tuple[str, ...]
    staging_path: str
    read_only: bool
    options: tuple[str, ...]

    @property
    def source(self) -> VolumeSource:
        return VolumeSource(volume=self.volume, servers=self.servers)


class StateStore:
    def __init__(self, directory: Path) -> None:
        self._dir = directory

    @property
    def directory(self) -> Path:
        return self._dir

    def ensure(self) -> None:
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o750)

    def log_file(self, volume_id: str) -> Path:
        """Where the glusterfs client of this volume's staging mount writes its log."""
        return self._dir / f"{_checked(volume_id)}.log"

    def put(self, record: StagedVolume) -> None:
        path = self._path(record.volume_id)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(record), sort_keys=True))
        temporary.replace(path)

    def get(self, volume_id: str) -> StagedVolume | None:
        if not valid_volume_id(volume_id):
            return None
        try:
            data = json.loads(self._path(volume_id).read_text())
            return StagedVolume(
                volume_id=str(data["volume_id"]),
                volume=str(data["volume"]),
                servers=tuple(str(s) for s in data["servers"]),
                staging_path=str(data["staging_path"]),
                read_only=bool(data["read_only"]),
                options=tuple(str(o) for o in data["options"]),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("ignoring unreadable state record of volume %s: %s", volume_id, e)
            return None

    def delete(self, volume_id: str) -> None:
        self._path(volume_id).unlink(missing_ok=True)
        self.log_file(volume_id).unlink(missing_ok=True)

    def all(self) -> list[StagedVolume]:
        records = []
        for path in sorted(self._dir.glob("*.json")):
            record = self.get(path.stem)
            if record is not None:
                records.append(record)
        return records

    def _path(self, volume_id: str) -> Path:
        return self._dir / f"{_checked(volume_id)}.json"


def _checked(volume_id: str) -> str:
    # Only 32-hex ids ever name a file here, so a request cannot point the store elsewhere.
    if not valid_volume_id(volume_id):
        raise ValueError(f"not a volume id: {volume_id[:40]!r}")
    return volume_id
