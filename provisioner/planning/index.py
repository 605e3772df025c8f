"""The placement index: a cluster's devices ordered by free bytes, kept current as bricks come and go.

A brick is placed on the device with the most free bytes, among equally free ones the first
clockwise on a hash ring from a point hashed from (volume, set), never beside another brick of its
set and, with strict zone checking, never in a zone its set already uses. Scanning every device for
that is too slow at 100,000 devices, so the devices are kept by free bytes: the distinct levels,
sorted, each a hash ring with one sub-ring per zone and a count per node. A brick is then placed
by looking at the emptiest levels and a few ring neighbours (``DeviceIndex.best``).

``DeviceUsage``, the usage mapping the desired state keeps, carries the index of its cluster and
moves devices between levels in ``add``; any other mapping gets a throwaway index per plan (right
for small clusters and tests). The index is a cache: it never changes what a mapping says, so a
plan depends on its arguments only. Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left, insort
from collections.abc import Callable, Iterator, Mapping

from provisioner.domain import Cluster, Device, DeviceId, Disperse, Durability, Node, NodeId

Usage = Mapping[DeviceId, int]
"""Bytes already taken on each device (devices absent from the mapping are empty)."""

RING = 2**64


def hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class DeviceUsage(Mapping[DeviceId, int]):
    """Bytes taken on each device of one cluster, kept current by ``add``; carries the placement
    index of the cluster it was last planned against (rebuilt when another Cluster object comes)."""

    __slots__ = ("_bytes", "_index")

    def __init__(self) -> None:
        self._bytes: dict[DeviceId, int] = {}
        self._index: DeviceIndex | None = None

    def __getitem__(self, device: DeviceId) -> int:
        return self._bytes[device]

    def get(self, device: DeviceId, default: int = 0) -> int:  # type: ignore[override]
        return self._bytes.get(device, default)

    def __iter__(self) -> Iterator[DeviceId]:
        return iter(self._bytes)

    def __len__(self) -> int:
        return len(self._bytes)

    def add(self, device: DeviceId, delta: int) -> None:
        before = self._bytes.get(device, 0)
        self._bytes[device] = before + delta
        if self._index is not None:
            self._index.move(device, before, before + delta)

    def index_for(self, cluster: Cluster) -> DeviceIndex:
        if self._index is None or self._index.topology.cluster is not cluster:
            self._index = DeviceIndex(ClusterSlots(cluster), self)
        return self._index


class ClusterSlots:
    """The static half of the index: the enabled devices of one cluster, numbered ("slots") in
    cluster order, with what placement compares of each. Device ids are unique in a cluster."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.nodes: list[Node] = []
        self.devices: list[Device] = []
        self.node_keys: list[int] = []  # one small int per node id
        self.zones: list[int] = []
        self.hashes: list[int] = []  # the device's point on the tie-break ring
        self.slot_of: dict[DeviceId, int] = {}
        keys: dict[NodeId, int] = {}
        usable: list[Node] = []
        self.tagged = False  # any node or device with a tag: placement must narrow (planning.tags)
        for node in cluster.nodes:
            self.tagged = self.tagged or bool(node.tags) or any(d.tags for d in node.devices)
            if not node.enabled:
                continue
            devices = [d for d in node.devices if d.enabled]
            if not devices:
                continue
            usable.append(node)
            key = keys.setdefault(node.id, len(keys))
            count = len(devices)
            self.nodes += [node] * count
            self.devices += devices
            self.node_keys += [key] * count
            self.zones += [node.zone] * count
            self.hashes += [hash64(d.id) for d in devices]
        self.slot_of = {d.id: slot for slot, d in enumerate(self.devices)}
        self.node_key_of = keys  # node id -> its small int, for the usable nodes
        self.usable_nodes = len(usable)
        self.usable_zones = len({n.zone for n in usable})
        self.entries: list[Entry] = [(h, slot) for slot, h in enumerate(self.hashes)]
        self.ring_order = sorted(range(len(self.hashes)), key=self.hashes.__getitem__)  # stable: ties by slot


Entry = tuple[int, int]  # (ring point, slot): sorted, ties on the point go to the lower slot


class _Level:
    """The devices with one amount of free bytes."""

    __slots__ = ("nodes", "ring", "zones")

    def __init__(self) -> None:
        self.ring: list[Entry] = []
        self.zones: dict[int, list[Entry]] = {}
        self.nodes: dict[int, int] = {}


class DeviceIndex:
    """Devices by free bytes. ``best`` returns the slot with the smallest key
    (zone already used by the set, -free bytes, ring distance from the set's origin, slot)
    among devices on nodes the set does not use yet, with room, and (strict) in a new zone."""

    def __init__(self, topology: ClusterSlots, usage: Usage) -> None:
        self.topology = topology
        self.free = [d.capacity - usage.get(d.id, 0) for d in topology.devices]
        self.by_free: dict[int, _Level] = {}
        for slot in topology.ring_order:  # appending in ring order leaves every ring sorted
            self._insert(slot, self.free[slot], keep_sorted=False)
        self.levels = sorted(self.by_free)  # distinct free amounts, ascending

    def move(self, device: DeviceId, used_before: int, used_after: int) -> None:
        slot = self.topology.slot_of.get(device)
        if slot is None or used_before == used_after:
            return
        self._remove(slot, self.free[slot])
        self.free[slot] -= used_after - used_before
        self._insert(slot, self.free[slot], keep_sorted=True)

    def _insert(self, slot: int, free: int, *, keep_sorted: bool) -> None:
        top = self.topology
        level = self.by_free.get(free)
        if level is None:
            level = self.by_free[free] = _Level()
            if keep_sorted:
                insort(self.levels, free)
        entry = top.entries[slot]
        zone = level.zones.setdefault(top.zones[slot], [])
        if keep_sorted:
            insort(level.ring, entry)
            insort(zone, entry)
        else:
            level.ring.append(entry)
            zone.append(entry)
        node = top.node_keys[slot]
        level.nodes[node] = level.nodes.get(node, 0) + 1

    def _remove(self, slot: int, free: int) -> None:
        top = self.topology
        level = self.by_free[free]
        entry = top.entries[slot]
        del level.ring[bisect_left(level.ring, entry)]
        zone = level.zones[top.zones[slot]]
        del zone[bisect_left(zone, entry)]
        if not zone:
            del level.zones[top.zones[slot]]
        node = top.node_keys[slot]
        level.nodes[node] -= 1
        if not level.nodes[node]:
            del level.nodes[node]
        if not level.ring:
            del self.by_free[free]
            del self.levels[bisect_left(self.levels, free)]

    def best(
        self,
        size: int,
        origin: int,
        used_nodes: set[int],
        used_zones: set[int],
        *,
        strict: bool,
        taken: dict[int, int],
    ) -> int | None:
        top = self.topology
        best: int | None = None
        best_key: tuple[bool, int, int, int] | None = None
        # Devices this plan already used hold less than the index says: weigh them one by one,
        # and leave them out of the index search.
        candidates = [(slot, self.free[slot] - bytes_) for slot, bytes_ in taken.items()]
        found = self._search(size, origin, used_nodes, used_zones, taken, new_zone=True)
        if found is None and not strict:
            found = self._search(size, origin, used_nodes, used_zones, taken, new_zone=False)
        if found is not None:
            candidates.append((found, self.free[found]))
        for slot, free in candidates:
            zone_used = top.zones[slot] in used_zones
            if top.node_keys[slot] in used_nodes or free < size or (strict and zone_used):
                continue
            key = (zone_used, -free, (top.hashes[slot] - origin) % RING, slot)
            if best_key is None or key < best_key:
                best, best_key = slot, key
        return best

    def _search(
        self,
        size: int,
        origin: int,
        used_nodes: set[int],
        used_zones: set[int],
        taken: dict[int, int],
        *,
        new_zone: bool,
    ) -> int | None:
        """The best device outside ``taken`` in a zone the set has not used (``new_zone``), or else
        on a node the set has not used (every device with room in a new zone is then in ``taken``)."""
        top = self.topology
        if new_zone:

            def ok(slot: int) -> bool:
                return top.zones[slot] not in used_zones and slot not in taken
        else:

            def ok(slot: int) -> bool:
                return top.node_keys[slot] not in used_nodes and slot not in taken

        for position in range(len(self.levels) - 1, -1, -1):
            free = self.levels[position]
            if free < size:
                return None
            level = self.by_free[free]
            # Count the qualifying devices exactly, so that a level without one costs O(set size).
            if new_zone:
                blocked = sum(len(level.zones.get(z, ())) for z in used_zones)
                blocked += sum(1 for s in taken if self.free[s] == free and top.zones[s] not in used_zones)
            else:
                blocked = sum(level.nodes.get(n, 0) for n in used_nodes)
                blocked += sum(1 for s in taken if self.free[s] == free and top.node_keys[s] not in used_nodes)
            qualifying = len(level.ring) - blocked
            if qualifying <= 0:
                continue
            if new_zone and len(level.zones) * qualifying < len(level.ring):
                # Few qualifying devices: ask each new zone's ring rather than walk past the used zones.
                firsts = [
                    first_on_ring(ring, origin, ok) for zone, ring in level.zones.items() if zone not in used_zones
                ]
                return min(
                    (s for s in firsts if s is not None),
                    key=lambda s: ((top.hashes[s] - origin) % RING, s),
                )
            return first_on_ring(level.ring, origin, ok)
        return None

    def shortfall(
        self,
        durability: Durability,
        size: int,
        used_nodes: set[int],
        used_zones: set[int],
        *,
        strict: bool,
        taken: dict[int, int],
    ) -> str:
        top = self.topology
        free = [f - taken.get(slot, 0) for slot, f in enumerate(self.free)]
        others = [s for s in range(len(free)) if top.node_keys[s] not in used_nodes]
        if strict:
            others = [s for s in others if top.zones[s] not in used_zones]
        largest = max((free[s] for s in others), default=0)
        nodes_with_room = len({top.nodes[s].id for s in range(len(free)) if free[s] >= size})
        kind = "disperse" if isinstance(durability, Disperse) else durability.type
        return (
            f"no device with {size} bytes free on another node for a {kind} set of "
            f"{durability.set_size}: {nodes_with_room} node(s) have room, largest free on the "
            f"remaining nodes is {largest} bytes"
        )


def first_on_ring(ring: list[Entry], origin: int, ok: Callable[[int], bool]) -> int | None:
    """The first slot at or after ``origin`` (wrapping) that is ``ok``."""
    count = len(ring)
    at = bisect_left(ring, (origin,))
    for _ in range(count):
        if at == count:
            at = 0
        slot = ring[at][1]
        if ok(slot):
            return slot
        at += 1
    return None
