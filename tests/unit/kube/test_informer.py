"""The informer's list/watch loop against a scripted source (``watch.informer``)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from provisioner.watch.informer import Gone, Informer, Obj
from tests.unit.kube.samples import Handlers, ScriptedSource, obj, play, relists, until


async def test_informer_lists_then_hands_on_every_watch_event() -> None:
    scripted = ScriptedSource(
        lists=[([obj("a", "3"), obj("b", "5")], "10")],
        watches=[[("ADDED", obj("c", "11")), ("MODIFIED", obj("a", "12")), ("DELETED", obj("b", "13"))]],
    )
    handlers, informer = await play(scripted, lambda h: len(scripted.watched_from) == 2)
    assert handlers.lists == [["a", "b"]]
    assert handlers.events == [("ADDED", "c"), ("MODIFIED", "a"), ("DELETED", "b")]
    assert informer.synced.is_set()
    assert scripted.watched_from == ["10", "13"]


async def test_informer_resumes_each_watch_from_the_last_version_seen() -> None:
    scripted = ScriptedSource(
        lists=[([], "10")],
        watches=[
            [("ADDED", obj("a", "11")), ("MODIFIED", obj("a", "12"))],
            [],  # a stream that ended at once (dropped connection)
            [("ADDED", obj("b", "20"))],
        ],
    )
    handlers, informer = await play(scripted, lambda h: len(scripted.watched_from) == 4)
    assert scripted.watched_from == ["10", "12", "12", "20"]
    assert handlers.lists == [[]]  # no relist for an ended stream
    assert informer.resource_version == "20"


async def test_informer_relists_when_the_version_is_gone() -> None:
    kind = "persistentvolumes"
    before = relists(kind, "gone")
    scripted = ScriptedSource(
        lists=[([obj("a", "3")], "10"), ([obj("a", "3"), obj("b", "25")], "30")],
        watches=[[("ADDED", obj("x", "11"))], Gone(), [("MODIFIED", obj("b", "31"))]],
    )
    handlers, _ = await play(scripted, lambda h: len(scripted.watched_from) == 4, kind=kind)
    assert handlers.lists == [["a"], ["a", "b"]]
    assert handlers.events == [("ADDED", "x"), ("MODIFIED", "b")]
    assert scripted.watched_from == ["10", "11", "30", "31"]
    assert relists(kind, "gone") == before + 1


async def test_informer_bookmark_moves_the_version_without_an_event() -> None:
    scripted = ScriptedSource(
        lists=[([], "10")],
        watches=[[("BOOKMARK", {"metadata": {"resourceVersion": "40"}}), ("ADDED", {"metadata": {"name": "n"}})]],
    )
    handlers, informer = await play(scripted, lambda h: len(scripted.watched_from) == 2)
    assert handlers.events == [("ADDED", "n")]  # an object without a version keeps the bookmark's
    assert scripted.watched_from == ["10", "40"]
    assert informer.resource_version == "40"


async def test_informer_retries_a_failed_list_after_the_retry_delay() -> None:
    kind = "persistentvolumeclaims"
    before = relists(kind, "error")
    scripted = ScriptedSource(lists=[ConnectionRefusedError("apiserver away"), ([obj("a", "1")], "1")], watches=[])
    handlers, informer = await play(scripted, lambda h: len(scripted.watched_from) == 1, retry=0.02, kind=kind)
    assert handlers.lists == [["a"]]
    assert len(scripted.list_calls) == 2
    assert scripted.list_calls[1] - scripted.list_calls[0] >= 0.02
    assert relists(kind, "error") == before + 1
    assert informer.synced.is_set()


async def test_informer_retries_a_failing_handler_by_relisting() -> None:
    scripted = ScriptedSource(lists=[([obj("a", "1")], "1"), ([obj("a", "1")], "2")], watches=[])
    calls: list[int] = []

    async def flaky(items: Sequence[Obj]) -> None:
        calls.append(len(items))
        if len(calls) == 1:
            raise RuntimeError("handler failed")

    informer = Informer(scripted.source(), on_list=flaky, on_event=Handlers().on_event, resync=3600.0, retry=0.001)
    task = asyncio.create_task(informer.run())
    try:
        await until(lambda: len(scripted.watched_from) == 1)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert calls == [1, 1]
    assert scripted.watched_from == ["2"]


async def test_informer_relists_at_each_resync() -> None:
    kind = "persistentvolumes"
    before = relists(kind, "resync")
    scripted = ScriptedSource(lists=[([obj("a", "1")], "1"), ([obj("a", "1"), obj("b", "2")], "2")], watches=[])
    handlers, _ = await play(scripted, lambda h: len(h.lists) == 2, resync=0.05, kind=kind)
    assert handlers.lists == [["a"], ["a", "b"]]
    assert relists(kind, "resync") == before + 1
    assert scripted.watched_from[0] == "1"
    assert scripted.list_calls[1] - scripted.list_calls[0] >= 0.05
