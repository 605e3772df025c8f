"""The one retry owner: how often, how long, and when the request's deadline ends it (no real sleeps)."""

from __future__ import annotations

import random

import pytest

from provisioner.errors import (
    DeadlineExceeded,
    GlusterBusy,
    Internal,
    NodeUnreachable,
    TemporaryError,
    VolumeNotFound,
)
from provisioner.handling.retry import Retrying
from provisioner.settings import WorkerSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def retrying(clock: Clock, **settings: float) -> Retrying:
    return Retrying(
        WorkerSettings.model_validate({"max_attempts": 5, "retry_backoff": 1.0, "retry_backoff_max": 8.0, **settings}),
        sleep=clock.sleep,
        clock=clock,
        rng=random.Random(1),
    )


def failing(*errors: BaseException) -> tuple[list[int], object]:
    calls: list[int] = []

    async def attempt() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return "done"

    return calls, attempt


async def test_temporary_failures_are_retried_with_full_jitter_under_a_doubling_cap() -> None:
    clock = Clock()
    calls, attempt = failing(*(TemporaryError("blip", delay=0) for _ in range(4)))
    assert await retrying(clock)(attempt, what="step") == "done"  # type: ignore[arg-type]
    assert len(calls) == 5
    caps = [1.0, 2.0, 4.0, 8.0]
    assert all(0 <= wait <= cap for wait, cap in zip(clock.slept, caps, strict=True)), clock.slept
    assert len(set(clock.slept)) == 4, "jitter: the waits are not all the same"


async def test_the_error_s_own_delay_is_the_least_wait() -> None:
    clock = Clock()
    _, attempt = failing(NodeUnreachable("n1", "refused", delay=5.0), GlusterBusy("busy", delay=0.5))
    await retrying(clock)(attempt, what="step")  # type: ignore[arg-type]
    assert clock.slept[0] >= 5.0 and clock.slept[1] >= 0.5


async def test_permanent_failures_pass_at_once() -> None:
    clock = Clock()
    calls, attempt = failing(VolumeNotFound("gone"))
    with pytest.raises(VolumeNotFound):
        await retrying(clock)(attempt, what="step")  # type: ignore[arg-type]
    assert len(calls) == 1 and clock.slept == []


async def test_the_last_temporary_failure_is_raised_as_it_is() -> None:
    clock = Clock()
    calls, attempt = failing(*(NodeUnreachable("n1", "refused", delay=0) for _ in range(5)))
    with pytest.raises(NodeUnreachable):
        await retrying(clock)(attempt, what="step")  # type: ignore[arg-type]
    assert len(calls) == 5 and len(clock.slept) == 4


async def test_an_unexpected_exception_is_retried_then_internal() -> None:
    clock = Clock()
    calls, attempt = failing(*(KeyError("bug") for _ in range(5)))
    with pytest.raises(Internal, match="step: KeyError"):
        await retrying(clock)(attempt, what="step")  # type: ignore[arg-type]
    assert len(calls) == 5


async def test_no_wait_starts_that_would_end_after_the_deadline() -> None:
    clock = Clock()
    calls, attempt = failing(*(NodeUnreachable("n1", "refused", delay=30.0) for _ in range(5)))
    bounded = retrying(clock).within(45)
    with pytest.raises(DeadlineExceeded, match="n1 unreachable"):
        await bounded(attempt, what="step")  # type: ignore[arg-type]
    assert len(calls) == 2 and clock.slept == [30.0], "the second 30 s wait would pass the deadline"


async def test_a_request_past_its_deadline_runs_no_more_steps() -> None:
    clock = Clock()
    bounded = retrying(clock).within(10)
    clock.now += 11
    calls, attempt = failing()
    with pytest.raises(DeadlineExceeded, match="has passed"):
        await bounded(attempt, what="step")  # type: ignore[arg-type]
    assert calls == []
