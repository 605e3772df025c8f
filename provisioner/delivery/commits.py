"""What each finished record commits: the offset over the contiguous finished prefix, and ledger
entries for records that finished above it (pure).

Records of a partition may finish out of order, but the consumer offset can only move past a
contiguous prefix (Kafka has one committed position per partition). So when a record finishes:

* if it closes the gap at the watermark, the offset moves past it and every finished record after
  it, and the ledger entries of those records are tombstoned in the same transaction;
* otherwise the offset stays, and the record's transaction writes a ledger entry saying it was
  answered, so a redelivery after a crash skips it instead of answering twice.

``plan`` computes that without changing anything; ``apply`` records it once the transaction has
committed. Between the two the commit may fail or its fate may be unknown: then nothing here has
changed and the lane re-reads from the broker's committed offset (``Commits.restart``).

Worked example (``tests/unit/delivery/test_commits.py``): offsets 10..14 in flight, 12 and 13
finish first → each writes ``answered/…/12`` and ``/13``, offset stays 10; 10 finishes → offset
11; 11 finishes → offset 14 and tombstones for 12 and 13.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CommitPlan:
    offset: int  # the record that finished
    commit_to: int | None  # the new committed position (the next offset to read), None: unchanged
    answered: bool  # write a ledger entry for this record (it finished above the watermark)
    forget: tuple[int, ...]  # ledger entries the new position passes (tombstone them)


class Commits:
    """The committed position of one partition and the finished records above it."""

    def __init__(self, watermark: int, ledgered: Iterable[int] = ()) -> None:
        """``watermark``: the broker's committed offset for the partition (the next to read);
        ``ledgered``: offsets at or above it that the ledger says were answered."""
        self.watermark = watermark
        self._finished: set[int] = set()
        self._ledgered: set[int] = {o for o in ledgered if o >= watermark}

    def plan(self, offset: int, *, ledgered: bool = False) -> CommitPlan:
        """The commit for ``offset`` finishing; ``ledgered``: it was skipped because the ledger
        already has it (so it needs no new entry)."""
        if offset < self.watermark or offset in self._finished:
            raise ValueError(f"offset {offset} is already finished (watermark {self.watermark})")
        done = self._finished | {offset}
        new = self.watermark
        while new in done:
            new += 1
        answered = offset >= new and not ledgered
        forget = tuple(sorted(o for o in self._ledgered | ({offset} if ledgered else set()) if o < new))
        return CommitPlan(offset, new if new > self.watermark else None, answered, forget)

    def apply(self, plan: CommitPlan) -> None:
        """The plan's transaction committed."""
        self._finished.add(plan.offset)
        if plan.answered:
            self._ledgered.add(plan.offset)
        if plan.commit_to is not None:
            self._finished = {o for o in self._finished if o >= plan.commit_to}
            self.watermark = plan.commit_to
        self._ledgered -= set(plan.forget)

    def is_answered(self, offset: int) -> bool:
        """Whether the ledger says a (redelivered) record was answered already."""
        return offset in self._ledgered
