"""Crash injection: the countdown exits at exactly the Nth passing of its point, and nowhere else."""

from __future__ import annotations

import pytest

from provisioner.executor import fault
from provisioner.executor.fault import Countdown


def test_the_countdown_exits_at_the_nth_passing_of_its_point(monkeypatch: pytest.MonkeyPatch) -> None:
    exits: list[int] = []
    monkeypatch.setattr("provisioner.executor.fault.os._exit", exits.append)
    countdown = Countdown("transaction_sent:2")
    countdown.passed("transaction_committed")
    countdown.passed("transaction_sent")
    countdown.passed("mkfs.xfs")
    assert exits == []
    countdown.passed("transaction_sent")
    assert exits == [fault.CRASH_EXIT_CODE]


@pytest.mark.parametrize("spec", ["mkfs.xfs", "mkfs.xfs:0", ":1", "x:-1", "x:one"])
def test_a_bad_spec_is_refused_with_the_form_to_write(spec: str) -> None:
    with pytest.raises(ValueError, match="POINT:N"):
        Countdown(spec)
