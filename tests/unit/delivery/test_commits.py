"""Worked examples of what each finished record commits (``delivery.commits``), in the style of
faust's offset tests: out-of-order completion, redelivery after a crash, a break during a commit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provisioner.delivery.commits import CommitPlan, Commits


def finish(commits: Commits, offset: int, *, ledgered: bool = False) -> CommitPlan:
    plan = commits.plan(offset, ledgered=ledgered)
    commits.apply(plan)
    return plan


def test_in_order_each_record_moves_the_offset_past_itself() -> None:
    commits = Commits(10)
    assert finish(commits, 10) == CommitPlan(10, commit_to=11, answered=False, forget=())
    assert finish(commits, 11) == CommitPlan(11, commit_to=12, answered=False, forget=())
    assert commits.watermark == 12


def test_out_of_order_records_are_ledgered_until_the_gap_closes() -> None:
    commits = Commits(10)  # 10..14 in flight
    assert finish(commits, 12) == CommitPlan(12, commit_to=None, answered=True, forget=())
    assert finish(commits, 13) == CommitPlan(13, commit_to=None, answered=True, forget=())
    assert commits.watermark == 10 and commits.is_answered(12) and commits.is_answered(13)
    assert finish(commits, 10) == CommitPlan(10, commit_to=11, answered=False, forget=())
    # 11 closes the gap: the offset jumps past 12 and 13, whose ledger entries are tombstoned with it
    assert finish(commits, 11) == CommitPlan(11, commit_to=14, answered=False, forget=(12, 13))
    assert commits.watermark == 14 and not commits.is_answered(12)
    assert finish(commits, 14) == CommitPlan(14, commit_to=15, answered=False, forget=())


def test_redelivery_after_a_crash_skips_what_the_ledger_holds() -> None:
    # before the crash: 12 and 13 answered (ledgered), the committed offset still 10
    commits = Commits(10, ledgered=[12, 13, 7])  # 7 is below the offset: a stale entry, ignored
    assert commits.is_answered(12) and commits.is_answered(13) and not commits.is_answered(7)
    assert finish(commits, 10).commit_to == 11
    assert finish(commits, 11).commit_to == 12
    # the redelivered 12 and 13 are skipped: no new ledger entry; passing them forgets theirs
    assert finish(commits, 12, ledgered=True) == CommitPlan(12, commit_to=13, answered=False, forget=(12,))
    assert commits.is_answered(13)
    assert finish(commits, 13, ledgered=True) == CommitPlan(13, commit_to=14, answered=False, forget=(13,))
    assert not commits.is_answered(13)


def test_a_skip_above_the_gap_keeps_its_entry_until_passed() -> None:
    commits = Commits(10, ledgered=[11])
    assert finish(commits, 11, ledgered=True) == CommitPlan(11, commit_to=None, answered=False, forget=())
    assert commits.is_answered(11)
    assert finish(commits, 10) == CommitPlan(10, commit_to=12, answered=False, forget=(11,))


def test_a_commit_that_breaks_changes_nothing() -> None:
    """``plan`` alone is what a failed transaction leaves: the next lane starts from the same place."""
    commits = Commits(10)
    finish(commits, 11)
    commits.plan(10)  # the transaction of 10 fails: apply is never called
    assert commits.watermark == 10 and commits.is_answered(11)
    assert finish(commits, 10) == CommitPlan(10, commit_to=12, answered=False, forget=(11,))


def test_finishing_twice_is_a_bug() -> None:
    commits = Commits(10)
    finish(commits, 11)
    with pytest.raises(ValueError, match="already finished"):
        commits.plan(11)
    finish(commits, 10)
    with pytest.raises(ValueError, match="already finished"):
        commits.plan(10)


@given(st.permutations(range(20)))
def test_any_completion_order_commits_everything_once(order: list[int]) -> None:
    commits = Commits(0)
    ledger: set[int] = set()
    for offset in order:
        plan = finish(commits, offset)
        assert plan.commit_to is None or plan.commit_to > offset
        if plan.answered:
            ledger.add(offset)
        ledger -= set(plan.forget)
        # the ledger holds exactly the finished records above the committed offset
        assert all(o >= commits.watermark for o in ledger)
    assert commits.watermark == 20 and ledger == set()
