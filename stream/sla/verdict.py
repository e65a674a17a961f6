"""Whether one slot was available, from its request and success counts (docs/sla.md §1–§2).

Example:
    >>> judge_slot(SlotCounts(requests=100, successes=99)).unavailable  # exactly 99%
    False
    >>> judge_slot(SlotCounts(requests=1000, successes=989)).unavailable
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

from stream.sla.policy import SlaPolicy

_DEFAULT_POLICY = SlaPolicy()


@dataclass(frozen=True)
class SlotCounts:
    """Distinct requests and successes counted in one slot."""

    requests: int
    successes: int

    def __post_init__(self) -> None:
        if self.requests < 0 or self.successes < 0:
            raise ValueError(f"slot counts cannot be negative: {self.requests} requests, {self.successes} successes")


@dataclass(frozen=True)
class SlotVerdict:
    """What the agreement says of one slot, before exemptions."""

    counts: SlotCounts
    success_rate: Fraction | None
    """Successes over requests, capped at 1; ``None`` when the slot had no requests."""
    unavailable: bool
    data_quality_issue: bool
    """More successes than requests: incomplete data, read as rate 1.0, never above 100%."""


def judge_slot(counts: SlotCounts, policy: SlaPolicy = _DEFAULT_POLICY) -> SlotVerdict:
    """Judge a slot exactly: unavailable when it had requests and ``successes/requests < threshold``.

    The comparison is done on integers (``successes * den < requests * num``),
    so 99% is available and 98.99999% is not, with no float rounding between.
    """
    requests, successes = counts.requests, counts.successes
    if requests == 0:
        return SlotVerdict(counts, None, unavailable=False, data_quality_issue=successes > 0)
    if successes > requests:
        return SlotVerdict(counts, Fraction(1), unavailable=False, data_quality_issue=True)
    threshold = policy.slot_success_min
    unavailable = successes * threshold.denominator < requests * threshold.numerator
    return SlotVerdict(counts, _rate(successes, requests), unavailable, data_quality_issue=False)


@lru_cache(maxsize=65_536)
def _rate(successes: int, requests: int) -> Fraction:
    """``successes / requests`` exactly. Cached: a fleet's slots repeat a few count pairs, and reducing a
    :class:`Fraction` was a third of judging a slot at a fleet's boundary (a Fraction is immutable: shared safely)."""
    return Fraction(successes, requests)
