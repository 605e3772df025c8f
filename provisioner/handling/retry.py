"""Retries with exponential backoff for one step of a request.

Temporary failures (``TemporaryError``) are retried up to ``worker.max_attempts`` with a doubling
delay capped at ``worker.retry_backoff_max`` (or the error's own suggested delay, if longer);
permanent ones go through at once. An unexpected exception is a bug or an unknown condition: it is
retried the same bounded way, then becomes a permanent ``Internal`` failure naming the step.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from provisioner import metrics
from provisioner.errors import PermanentError, ProvisionerError, TemporaryError
from provisioner.settings import WorkerSettings

log = logging.getLogger(__name__)
T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


class Retrying:
    def __init__(self, settings: WorkerSettings, *, sleep: Sleep = asyncio.sleep) -> None:
        self._settings = settings
        self._sleep = sleep

    async def __call__(self, attempt: Callable[[], Awaitable[T]], *, what: str) -> T:
        settings = self._settings
        delay = settings.retry_backoff
        for number in range(1, settings.max_attempts + 1):
            try:
                return await attempt()
            except TemporaryError as e:
                if number == settings.max_attempts:
                    raise
                wait = min(max(delay, e.delay) if e.delay else delay, settings.retry_backoff_max)
                log.warning("%s: attempt %d failed (%s); retrying in %.1fs", what, number, e, wait)
                metrics.RETRIES.labels(e.reason).inc()
                await self._sleep(wait)
            except ProvisionerError:
                raise
            except Exception as e:
                if number == settings.max_attempts:
                    raise PermanentError(f"{what}: {type(e).__name__}: {e}", reason="Internal") from e
                log.exception("%s: unexpected error on attempt %d", what, number)
                metrics.RETRIES.labels("Internal").inc()
                await self._sleep(min(delay, settings.retry_backoff_max))
            delay = min(delay * 2, settings.retry_backoff_max)
        raise AssertionError("unreachable")
