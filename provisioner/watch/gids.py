"""Group ids for volumes, unique across every PV the watcher can see (pure).

The in-tree provisioner kept one pool per StorageClass, so two classes with overlapping ranges could
hand out the same gid (openshift-docs). Here the used set is global: a gid seen on any PV or
reserved on any claim is never handed out again, whatever the class.
"""

from __future__ import annotations

from collections.abc import Iterable

from provisioner.errors import GidsExhausted


class GidPool:
    def __init__(self, used: Iterable[int] = ()) -> None:
        self._used = set(used)

    def __contains__(self, gid: int) -> bool:
        return gid in self._used

    def mark(self, gid: int) -> None:
        self._used.add(gid)

    def release(self, gid: int) -> None:
        self._used.discard(gid)

    def allocate(self, low: int, high: int) -> int:
        """The lowest free gid in ``[low, high]``, marked used."""
        candidate = low
        for gid in sorted(g for g in self._used if low <= g <= high):
            if gid > candidate:
                break
            candidate = gid + 1
        if candidate > high:
            raise GidsExhausted(f"every gid in {low}..{high} is in use; widen gidMin/gidMax of the StorageClass")
        self._used.add(candidate)
        return candidate
