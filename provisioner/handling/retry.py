"""The one place that decides whether a step of a request is tried again, and when.

Nothing below this layer retries: the SSH transport, the gluster CLI and the Kubernetes and Kafka
adapters raise typed temporary or permanent errors, and a handler wraps each step of its request
in ``Retrying``, which

* gives a temporary failure (``TemporaryError``) up to ``worker.max_attempts`` tries, waiting a
  random time between 0 and a doubling cap ("full jitter", so replicas that failed together do not
  retry together), but never less than the error's own suggested ``delay``;
* passes a permanent failure through at once;
* treats an unexpected exception as temporary for the same bounded tries, then as ``Internal``;
* keeps the whole request inside its deadline (``worker.request_deadline``): an attempt still
  running when it passes is cancelled, and a wait that would end after it is not started; either
  way the request fails with ``DeadlineExceeded`` naming the step and the last failure.

Time and randomness are injected, so the schedule is tested without sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from provisioner import metrics
from provisioner.errors import DeadlineExceeded, Internal, ProvisionerError, TemporaryError
from provisioner.settings import WorkerSettings

log = logging.getLogger(__name__)
T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


class Retrying:
    def __init__(
        self,
        settings: WorkerSettings,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        deadline: float | None = None,
    ) -> None:
        """``deadline``: a ``clock()`` reading after which no attempt runs (None: no deadline)."""
        self._settings = settings
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self.deadline = deadline

    def within(self, seconds: float) -> Retrying:
        """The same policy for one request, which must be done ``seconds`` from now."""
        return Retrying(
            self._settings, sleep=self._sleep, clock=self._clock, rng=self._rng, deadline=self._clock() + seconds
        )

    def backoff(self, number: int, error: BaseException) -> float:
        """Seconds to wait after failed attempt ``number`` (1-based)."""
        settings = self._settings
        cap = min(settings.retry_backoff * 2 ** (number - 1), settings.retry_backoff_max)
        floor = error.delay if isinstance(error, TemporaryError) else 0.0
        return max(floor, self._rng.uniform(0, cap))

    async def __call__(self, attempt: Callable[[], Awaitable[T]], *, what: str) -> T:
        attempts = self._settings.max_attempts
        for number in range(1, attempts + 1):
            try:
                return await self._bounded(attempt, what=what)
            except ProvisionerError as e:
                if not isinstance(e, TemporaryError) or number == attempts:
                    raise
                error: BaseException = e
            except Exception as e:
                if number == attempts:
                    raise Internal(f"{what}: {type(e).__name__}: {e}") from e
                log.exception("%s: unexpected error on attempt %d", what, number)
                error = e
            wait = self.backoff(number, error)
            if self.deadline is not None and self._clock() + wait > self.deadline:
                raise DeadlineExceeded(f"{what}: no time left within the request's deadline after: {error}") from error
            reason = error.reason if isinstance(error, ProvisionerError) else "Internal"
            log.warning("%s: attempt %d failed (%s); retrying in %.1fs", what, number, error, wait)
            metrics.RETRIES.labels(reason).inc()
            await self._sleep(wait)
        raise AssertionError("unreachable")

    async def _bounded(self, attempt: Callable[[], Awaitable[T]], *, what: str) -> T:
        if self.deadline is None:
            return await attempt()
        left = self.deadline - self._clock()
        if left <= 0:
            raise DeadlineExceeded(f"{what}: the request's deadline has passed")
        try:
            async with asyncio.timeout(left) as scope:
                return await attempt()
        except TimeoutError as e:
            if scope.expired():
                raise DeadlineExceeded(f"{what}: still running when the request's deadline passed") from e
            raise
