"""List, then watch, one kind of object; resume from the last resourceVersion, relist after 410 Gone.

A watch stream ends by itself (the server's timeout, a dropped connection): the next one starts from
the last resourceVersion seen, so nothing in between is missed. When that version is too old for the
API server (410 Gone, after etcd compaction), a full relist hands every object to the caller again.
The caller's handlers must therefore be idempotent, and they are called again for every object at
each ``resync`` (level-triggered: a missed or failed action is retried there).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client

from provisioner import metrics

log = logging.getLogger(__name__)
Obj = dict[str, Any]


class Gone(Exception):
    """The resourceVersion to resume from has been compacted away: relist."""


@dataclass(frozen=True, slots=True)
class Source:
    """How to list and watch one kind (injected, so tests can play 410s and dropped streams)."""

    kind: str
    list_all: Callable[[], Awaitable[tuple[list[Obj], str]]]
    watch_from: Callable[[str, float], AsyncIterator[tuple[str, Obj]]]


class Informer:
    def __init__(
        self,
        source: Source,
        *,
        on_list: Callable[[Sequence[Obj]], Awaitable[None]],
        on_event: Callable[[str, Obj], Awaitable[None]],
        resync: float,
        retry: float = 2.0,
    ) -> None:
        self._source = source
        self._on_list = on_list
        self._on_event = on_event
        self._resync = resync
        self._retry = retry
        self.resource_version = ""
        self.synced = asyncio.Event()

    async def relist(self) -> None:
        items, self.resource_version = await self._source.list_all()
        await self._on_list(items)
        self.synced.set()

    async def run(self) -> None:
        kind = self._source.kind
        while True:
            try:
                await self.relist()
                listed = time.monotonic()
                while (left := self._resync - (time.monotonic() - listed)) > 0:
                    await self._watch(timeout=min(left, 300.0))
                metrics.WATCH_RELISTS.labels(kind, "resync").inc()
            except Gone:
                log.info("%s: resourceVersion %s is gone (410); relisting", kind, self.resource_version)
                metrics.WATCH_RELISTS.labels(kind, "gone").inc()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the API server may be away; never give up
                log.warning(
                    "%s: list/watch failed (%s: %s); relisting in %.0fs", kind, type(e).__name__, e, self._retry
                )
                metrics.WATCH_RELISTS.labels(kind, "error").inc()
                await asyncio.sleep(self._retry)

    async def _watch(self, *, timeout: float) -> None:
        async for kind, obj in self._source.watch_from(self.resource_version, timeout):
            version = (obj.get("metadata") or {}).get("resourceVersion")
            if version:
                self.resource_version = version
            if kind != "BOOKMARK":
                await self._on_event(kind, obj)


def api_source(kind: str, call: Callable[..., Awaitable[Any]]) -> Source:
    """A Source over a kubernetes-asyncio list call (cluster-wide), read as raw JSON."""

    async def list_all() -> tuple[list[Obj], str]:
        response = await call(_preload_content=False)
        body = json.loads(await response.read())
        return list(body.get("items") or []), str((body.get("metadata") or {}).get("resourceVersion", ""))

    async def watch_from(resource_version: str, timeout: float) -> AsyncIterator[tuple[str, Obj]]:
        try:
            response = await call(
                watch=True,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=max(1, int(timeout)),
                _preload_content=False,
                _request_timeout=timeout + 30,
            )
        except client.ApiException as e:
            if e.status == 410:
                raise Gone() from e
            raise
        try:
            async for line in response.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone()
                    raise client.ApiException(status=obj.get("code"), reason=str(obj.get("message")))
                yield str(event.get("type")), obj
        finally:
            response.release()

    return Source(kind=kind, list_all=list_all, watch_from=watch_from)
