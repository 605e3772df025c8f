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
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from hypothesis import strategies as st
from hypothesis.errors import NonInteractiveExampleWarning
from pydantic import ValidationError

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
    """20 kill -9 + restart rounds during a burst of 30 provisions (some land mid-commit): one result
    each, and ``provisioner reconcile`` finds no orphan, no lost brick and no volume twice."""
    stack = own
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
        stack.assert_no_drift(cluster)

        deletes = [delete(cluster, name) for name in names]
        await send(stack, deletes)
        counts = await collect(stack, {d.id for d in deletes}, timeout=300)
        assert counts == Counter({d.id: 1 for d in deletes})
        assert await existing(stack, names) == []
        stack.assert_no_drift(cluster)
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
        for cluster in clusters:  # nor a brick: no missing one, and no orphan either
            stack.assert_no_drift(cluster)
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


Input = tuple[bytes, bytes | None, list[tuple[str, bytes]]]


def _hostile_inputs(rnd: random.Random) -> list[Input]:
    """At least 10,000 requests no daemon could handle, of every kind the issue of hardening names."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonInteractiveExampleWarning)
        drawn = [_bad_event().example() for _ in range(1500)]
    inputs: list[Input] = [(value, key, []) for value, key in drawn]
    inputs += [(rnd.randbytes(rnd.randint(1, 300)), b"fuzz", []) for _ in range(8500)]
    for depth in (500, 1000, 5000, 100_000, 900_000):  # deep nesting, in and out of a valid envelope
        inputs.append((b"[" * depth, b"fuzz", []))
        inputs.append((b'{"a":' * min(depth, 150_000), b"fuzz", []))
        envelope = encode(delete("fuzz", "deep"))[0]
        inputs.append((envelope.replace(b'"name":"deep"', b'"name":' + b"[" * min(depth, 150_000)), b"fuzz", []))
    for digits in (4300, 4301, 5000, 100_000):  # integers longer than Python converts
        inputs.append((b"9" * digits, b"fuzz", []))
        big = encode(provision("fuzz", "big"))[0].replace(b'"size":1073741824', b'"size":' + b"9" * digits)
        inputs.append((big, b"fuzz", []))
    for field, wrong in _wrong_types():  # every field of a provision, each wrong type
        data = {"cluster": "fuzz", "size": GiB, "name": "wrong", field: wrong}
        try:  # a value of the right type after all ("yes" is a fine name) is no hostile input
            models.ProvisionVolume.model_validate(data)
            continue
        except ValidationError:
            pass
        body = {"specversion": "1.0", "id": uuid.uuid4().hex, "source": "/fuzz", "type": catalog.PROVISION_REQUESTED}
        inputs.append((json.dumps({**body, "data": data}).encode(), b"fuzz", []))
    pad = {"specversion": "1.0", "id": "x", "source": "/fuzz", "type": catalog.DELETE_REQUESTED}
    for size in (899 * 1024, 901 * 1024, 1024 * 1024 - 200):  # around the dead-letter limit and the producer's
        small = json.dumps({**pad, "data": {"cluster": "fuzz", "name": "p", "pad": ""}}).encode()  # an unknown field
        inputs.append((small.replace(b'"pad": ""', b'"pad": "' + b"x" * (size - len(small)) + b'"'), b"fuzz", []))
    return inputs


def _wrong_types() -> list[tuple[str, object]]:
    values: list[object] = [None, True, 7, 1.5, "5368709120", "yes", [], {}, [1], {"a": 1}]
    fields = ["cluster", "size", "durability", "volume_id", "name", "gid", "options", "zone_checking", "labels"]
    fields += ["snapshot_factor", "kubernetes"]
    right: dict[str, tuple[object, ...]] = {"size": (7,), "gid": (7,), "snapshot_factor": (7, 1.5)}
    right |= {"kubernetes": (None,), "volume_id": (None,)}
    right |= {"name": (None,), "options": ({},), "labels": ({},)}
    return [(f, v) for f in fields for v in values if not any(v == r and type(v) is type(r) for r in right.get(f, ()))]


async def test_ten_thousand_hostile_events_each_get_one_answer_and_no_lane_stalls(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Over 10,000 hostile inputs (random bytes, deep nesting, huge numbers, values around the size
    limits, a wrong type in every field, headers that contradict the body) with 300 valid requests
    shuffled in: every input gets exactly one dead letter or result, every valid request succeeds,
    the consumer group's lag returns to zero, and the daemon never restarts. A value over the
    broker's own limit is refused to its producer and never reaches the daemon."""
    rnd = random.Random(10_000)
    stack = dataclasses.replace(stack, prefix=f"t{uuid.uuid4().hex[:8]}")
    daemon = Daemon(stack, tmp_path_factory.mktemp("fuzz") / "daemon.log")
    daemon.start()
    await daemon.wait_ready()
    try:
        await load_topology(stack, "fuzz")
        hostile = _hostile_inputs(rnd)
        valid = [delete("fuzz", f"nothing_{i}") for i in range(250)]
        contradicted = [delete("fuzz", f"nothing_c{i}") for i in range(50)]  # headers that disagree with the body
        stream: list[tuple[Input, str | None]] = [(item, None) for item in hostile]
        for event in valid:
            value, headers = encode(event)
            stream.insert(rnd.randrange(len(stream) + 1), ((value, b"fuzz", headers), event.id))
        for event in contradicted:
            value, _ = encode(event)
            lies = [("ce_type", catalog.PROVISION_REQUESTED.encode()), ("ce_id", b"another"), ("ce_source", b"/x")]
            stream.insert(rnd.randrange(len(stream) + 1), ((value, b"fuzz", lies), event.id))
        assert len(hostile) >= 10_000

        producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, linger_ms=5, max_request_size=4 * 1024 * 1024)
        await producer.start()
        placed: dict[tuple[int, int], str | None] = {}
        try:
            pending = [
                (await producer.send(stack.topic("requests"), value=v, key=k, headers=h), request_id)
                for (v, k, h), request_id in stream
            ]
            for delivery, request_id in pending:
                metadata = await delivery
                placed[(metadata.partition, metadata.offset)] = request_id
            with pytest.raises(KafkaError):  # over the broker's message.max.bytes: refused at the door
                await producer.send_and_wait(stack.topic("requests"), value=b"x" * (2 * 1024 * 1024), key=b"fuzz")
        finally:
            await producer.stop()

        answered = {e.id for e in valid} | {e.id for e in contradicted}
        succeeded = await collect(stack, {e.id for e in valid}, timeout=600)
        assert succeeded == Counter({e.id: 1 for e in valid}), "every valid request succeeds exactly once"
        expected_letters = {where for where, request_id in placed.items() if request_id is None}
        async with TopicReader(stack, stack.topic("dlq")) as dlq:
            for _ in range(600):
                await dlq.poll(1.0)
                if len(dlq.records) >= len(expected_letters):
                    break
            await dlq.poll(2.0)
        letters = Counter(
            (int(header(h, "dlq_partition") or -1), int(header(h, "dlq_offset") or -1)) for _, _, h in dlq.records
        )
        assert set(letters) >= expected_letters, f"{len(expected_letters - set(letters))} inputs have no dead letter"
        assert max(letters.values()) == 1, "an input was dead-lettered twice"
        lettered_valid = {placed[where] for where in letters if placed.get(where) is not None}
        assert not lettered_valid & {e.id for e in valid}
        async with TopicReader(stack, stack.topic("results")) as reader:
            await reader.poll(3.0)
            terminal = _terminal(reader.records)
        for event in contradicted:  # one answer each, whichever: a result or a dead letter
            assert terminal[event.id] + (event.id in lettered_valid) == 1, event.id
        assert not {rid for rid in terminal if rid not in answered and terminal[rid] > 1}
        assert await _lag(stack) == 0, "the consumer group caught up with every partition"
        assert daemon.process is not None and daemon.process.poll() is None, "the daemon never restarted"
    finally:
        daemon.stop()


async def _lag(stack: Stack) -> int:
    """Records of the requests topic the daemon's consumer group has not committed yet."""
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.bootstrap, group_id=stack.topic("group"))
    await consumer.start()
    try:
        partitions = [TopicPartition(stack.topic("requests"), p) for p in range(3)]
        ends = await consumer.end_offsets(partitions)
        committed = {tp: await consumer.committed(tp) or 0 for tp in partitions}
        return sum(ends[tp] - committed[tp] for tp in partitions)
    finally:
        await consumer.stop()
