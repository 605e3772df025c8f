"""Delivery guarantees on the real broker and nodes: exactly one result per request through crashes,
rebalances and floods of malformed events."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import signal
import uuid
import warnings
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import strategies as st
from hypothesis.errors import NonInteractiveExampleWarning

from devstack.stack import Daemon, Stack, TopicReader, load_topology, produce
from provisioner.events import catalog, models, results
from provisioner.events.envelope import Event, decode_result, encode, header, new_event
from provisioner.storage import commands

pytestmark = pytest.mark.integration
GiB = 1024**3


@pytest.fixture
def own(stack: Stack) -> Stack:
    """Topics, consumer group and transactional ids of this test alone: no other daemon shares them."""
    return dataclasses.replace(stack, prefix=f"t{uuid.uuid4().hex[:8]}")


def provision(cluster: str, name: str) -> Event:
    return new_event(
        catalog.PROVISION_REQUESTED, models.ProvisionVolume(cluster=cluster, size=GiB, name=name), source="/tests"
    )


def delete(cluster: str, name: str) -> Event:
    return new_event(catalog.DELETE_REQUESTED, models.DeleteVolume(cluster=cluster, name=name), source="/tests")


async def send(stack: Stack, events: list[Event]) -> None:
    for event in events:
        value, headers = encode(event)
        await produce(stack, value, key=event.data.cluster.encode(), headers=headers)  # type: ignore[attr-defined]


def _terminal(records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]) -> Counter[str]:
    """Terminal results per request id (progress events do not count)."""
    events = [decode_result(v) for _, v, _ in records]
    return Counter(e.data.request_id for e in events if catalog.is_terminal(e.type))  # type: ignore[attr-defined]


async def collect(stack: Stack, ids: set[str], *, timeout: float) -> Counter[str]:
    """Terminal results per request id (read_committed), waiting until every id has one."""
    seen: Counter[str] = Counter()
    async with TopicReader(stack, stack.topic("results")) as reader:
        deadline = asyncio.get_running_loop().time() + timeout
        while not ids <= set(seen) and asyncio.get_running_loop().time() < deadline:
            await reader.poll(1.0)
            seen = _terminal(reader.records)
        for _ in range(3):  # a little longer: duplicates would show up now
            await reader.poll(1.0)
        seen = _terminal(reader.records)
        answers = [decode_result(v) for _, v, _ in reader.records]
    failures = [r.data for r in answers if isinstance(r.data, results.RequestFailed) and r.data.request_id in ids]
    assert not failures, failures
    return Counter({rid: n for rid, n in seen.items() if rid in ids})


async def existing(stack: Stack, names: list[str]) -> list[str]:
    ssh = stack.ssh()
    try:
        found = []
        for name in names:
            info = await ssh.run(stack.nodes[0], commands.volume_info(name, timeout=60), timeout=90)
            if "<volume>" in info.stdout:
                found.append(name)
        return found
    finally:
        await ssh.close()


async def test_kill_9_at_random_moments_during_a_burst(own: Stack, tmp_path: Path) -> None:
    stack = own
    """20 kill -9 + restart rounds during a burst of 30 provisions: one result each, no volume twice."""
    daemon = Daemon(stack, tmp_path / "daemon.log")
    daemon.start()
    await daemon.wait_ready()
    cluster = f"crash-{uuid.uuid4().hex[:6]}"
    await load_topology(stack, cluster)
    names = [f"k9_{uuid.uuid4().hex[:8]}" for _ in range(30)]
    requests = [provision(cluster, name) for name in names]
    await send(stack, requests)
    rng = random.Random(7)
    try:
        for _ in range(20):
            await asyncio.sleep(rng.uniform(0.3, 2.0))
            assert daemon.process is not None
            daemon.process.send_signal(signal.SIGKILL)
            daemon.process.wait()
            daemon.start()
            await daemon.wait_ready()
        counts = await collect(stack, {r.id for r in requests}, timeout=300)
        assert counts == Counter({r.id: 1 for r in requests}), "exactly one terminal result per request"
        assert sorted(await existing(stack, names)) == sorted(names)

        deletes = [delete(cluster, name) for name in names]
        await send(stack, deletes)
        counts = await collect(stack, {d.id for d in deletes}, timeout=300)
        assert counts == Counter({d.id: 1 for d in deletes})
        assert await existing(stack, names) == []
    finally:
        daemon.stop()


async def test_two_daemons_one_stopped_mid_burst(own: Stack, tmp_path: Path) -> None:
    stack = own
    first, second = Daemon(stack, tmp_path / "a.log"), Daemon(stack, tmp_path / "b.log")
    first.start()
    second.start()
    await asyncio.gather(first.wait_ready(), second.wait_ready())
    clusters = [f"pair{i}-{uuid.uuid4().hex[:4]}" for i in range(3)]
    for cluster in clusters:
        await load_topology(stack, cluster)
    names = [f"two_{uuid.uuid4().hex[:8]}" for _ in range(12)]
    requests = [provision(clusters[i % 3], name) for i, name in enumerate(names)]
    try:
        await send(stack, requests)
        await asyncio.sleep(2.0)
        assert first.stop() == 0, first.tail()  # graceful: finishes or hands over its work
        counts = await collect(stack, {r.id for r in requests}, timeout=300)
        assert counts == Counter({r.id: 1 for r in requests})
        assert sorted(await existing(stack, names)) == sorted(names)
        deletes = [delete(clusters[i % 3], name) for i, name in enumerate(names)]
        await send(stack, deletes)
        await collect(stack, {d.id for d in deletes}, timeout=300)
        assert await existing(stack, names) == []
    finally:
        first.stop()
        second.stop()


async def test_replicas_that_repair_drift_never_touch_what_state_owns(own: Stack, tmp_path: Path) -> None:
    """Two, then three, daemons with RECONCILE_REPAIR and a pass every second, during a burst of 36
    provisions and deletes over three clusters: no replica removes a volume another one made, and no
    pass finds drift at all (nothing any of them does leaves an orphan)."""
    stack = own
    repairing = {"PROVISIONER_WORKER__RECONCILE_REPAIR": "true", "PROVISIONER_WORKER__RECONCILE_INTERVAL": "1"}
    daemons = [Daemon(stack, tmp_path / f"{n}.log", extra_env=repairing) for n in "abc"]
    for daemon in daemons[:2]:
        daemon.start()
    try:
        await asyncio.gather(*(d.wait_ready() for d in daemons[:2]))
        clusters = [f"rep{i}-{uuid.uuid4().hex[:4]}" for i in range(3)]
        for cluster in clusters:
            await load_topology(stack, cluster)
        names = [f"rep_{uuid.uuid4().hex[:8]}" for _ in range(18)]
        provisions = [provision(clusters[i % 3], name) for i, name in enumerate(names)]
        await send(stack, provisions[:9])
        daemons[2].start()  # a rebalance mid-burst
        await send(stack, provisions[9:])
        await daemons[2].wait_ready()
        counts = await collect(stack, {r.id for r in provisions}, timeout=300)
        assert counts == Counter({r.id: 1 for r in provisions})
        await asyncio.sleep(3.0)  # a few more passes of every replica over the new volumes
        assert sorted(await existing(stack, names)) == sorted(names), "a replica removed a volume state owns"
        deletes = [delete(clusters[i % 3], name) for i, name in enumerate(names)]
        await send(stack, deletes)
        await collect(stack, {d.id for d in deletes}, timeout=300)
        assert await existing(stack, names) == []
        for daemon in daemons:
            exposed = await daemon.metrics()
            drift = [line for line in exposed.splitlines() if line.startswith("provisioner_reconcile_drift_")]
            assert all(line.endswith(" 0.0") for line in drift if "_total" in line), (daemon.log, drift)
    finally:
        for daemon in daemons:
            daemon.stop()


def _bad_event() -> st.SearchStrategy[tuple[bytes, bytes | None]]:
    """One malformed request: junk bytes, broken JSON, a bad envelope, bad data, or the wrong key."""
    envelope = st.fixed_dictionaries(
        {"specversion": st.just("1.0"), "id": st.text(min_size=1, max_size=10), "source": st.just("/fuzz")},
        optional={"subject": st.text(max_size=5)},
    )
    bad_data = st.one_of(
        st.fixed_dictionaries({"cluster": st.just("fuzz"), "size": st.integers(max_value=0)}),
        st.fixed_dictionaries({"cluster": st.just("fuzz"), "size": st.just(GiB), "name": st.text(min_size=65)}),
        st.fixed_dictionaries(
            {
                "cluster": st.just("fuzz"),
                "size": st.just(GiB),
                "durability": st.fixed_dictionaries({"type": st.just("replicate"), "replica": st.integers(7, 99)}),
            }
        ),
        st.dictionaries(st.text(max_size=8), st.integers(), max_size=3),
    )
    as_event = st.builds(
        lambda env, data, type_: json.dumps({**env, "type": type_, "data": data}).encode(),
        envelope,
        bad_data,
        st.sampled_from([catalog.PROVISION_REQUESTED, catalog.DELETE_REQUESTED, "org.x.y.v1"]),
    )
    valid_but_wrong_key = st.builds(lambda n: encode(delete("fuzz", f"n{n}"))[0], st.integers(0, 10**6)).map(
        lambda v: (v, b"other-cluster")
    )
    junk = st.one_of(st.binary(min_size=1, max_size=200), st.text(min_size=1, max_size=100).map(str.encode), as_event)
    return st.one_of(st.tuples(junk, st.sampled_from([b"fuzz", None])), valid_but_wrong_key)


async def test_a_thousand_malformed_events_interleaved_with_valid_ones(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """1,000 malformed events drawn from hypothesis strategies, 50 valid ones shuffled in."""
    rnd = random.Random(1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonInteractiveExampleWarning)
        bad = [_bad_event().example() for _ in range(1000)]
    stack = dataclasses.replace(stack, prefix=f"t{uuid.uuid4().hex[:8]}")
    daemon = Daemon(stack, tmp_path_factory.mktemp("fuzz") / "daemon.log")
    daemon.start()
    await daemon.wait_ready()
    try:
        await load_topology(stack, "fuzz")
        valid = [delete("fuzz", f"nothing_{i}") for i in range(50)]
        stream: list[tuple[bytes, bytes | None, list[tuple[str, bytes]]]] = [(v, k, []) for v, k in bad]
        for event in valid:
            value, headers = encode(event)
            stream.insert(rnd.randrange(len(stream) + 1), (value, b"fuzz", headers))
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, linger_ms=5)
        await producer.start()
        try:
            for value, key, headers in stream:
                await producer.send(stack.topic("requests"), value=value, key=key, headers=headers)
            await producer.flush()
        finally:
            await producer.stop()
        counts = await collect(stack, {e.id for e in valid}, timeout=240)
        assert counts == Counter({e.id: 1 for e in valid})
        bad_values = Counter(v for v, _ in bad)
        async with TopicReader(stack, stack.topic("dlq")) as dlq:
            for _ in range(240):
                await dlq.poll(1.0)
                if len(dlq.records) >= len(bad):
                    break
        assert len(dlq.records) == len(bad), f"{len(dlq.records)} dead letters for {len(bad)} bad events"
        dead = Counter(v for _, v, h in dlq.records if header(h, "dlq_reason") and v in bad_values)
        assert dead == bad_values, "every malformed event is in the dead-letter topic exactly once"
        assert all(header(h, "dlq_reason") for _, _, h in dlq.records)
        assert daemon.process is not None and daemon.process.poll() is None, "the daemon never restarted"
    finally:
        daemon.stop()
