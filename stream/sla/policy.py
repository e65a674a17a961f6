"""The numbers of the agreement, gathered in one value so every rule reads them from one place.

The defaults are the agreement's (docs/sla.md); a deployment may change them in its config
file (an agreement with other thresholds), never in code. Thresholds are
``Fraction`` so that comparisons against them are exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from fractions import Fraction
from zoneinfo import ZoneInfo

SLOT_MINUTES = 5
"""Length of a slot. Fixed by the agreement (docs/sla.md §2), not a setting."""


@dataclass(frozen=True)
class CompensationTier:
    """Voucher ``percent`` of the month's fee owed when availability is below ``below``."""

    below: Fraction
    percent: int


DEFAULT_TIERS: tuple[CompensationTier, ...] = (
    CompensationTier(below=Fraction(999, 1000), percent=10),
    CompensationTier(below=Fraction(995, 1000), percent=20),
    CompensationTier(below=Fraction(99, 100), percent=50),
)


@dataclass(frozen=True)
class SlaPolicy:
    """Everything the SLA rules need to know besides the counts themselves.

    Example:
        >>> SlaPolicy().slot_success_min
        Fraction(99, 100)
    """

    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    slot_success_min: Fraction = Fraction(99, 100)
    """A slot with requests is unavailable when its success rate is below this."""
    availability_target: Fraction = Fraction(999, 1000)
    """A service month meets the SLA when its availability is at least this."""
    compensation_tiers: tuple[CompensationTier, ...] = DEFAULT_TIERS
    """Ordered from the highest ``below`` down; the last tier whose ``below`` exceeds the availability applies."""
    claim_after_working_days: int = 5
    """A claim opens the day after this many working days of the next calendar month."""
    claim_window_days: int = 60
    """A claim closes on this natural day after the service month ends."""
    silent_after_minutes: int = 15
    """A run of this many minutes without any event read is a silent period: "no data", not "no traffic"
    (:mod:`stream.sla.coverage`)."""

    def __hash__(self) -> int:
        """Computed once a policy: it keys the caches every app's month asks at each slot boundary, and hashing
        its fractions each time cost more than the work those caches keep."""
        cached: int | None = self.__dict__.get("_hash")
        if cached is None:
            cached = hash(tuple(getattr(self, f.name) for f in fields(self)))
            object.__setattr__(self, "_hash", cached)
        return cached

    def __getstate__(self) -> dict[str, object]:
        """The fields alone: the cached hash is the process's own (a time zone hashes by identity)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __post_init__(self) -> None:
        if not 0 < self.slot_success_min <= 1:
            raise ValueError(f"slot success threshold must be in (0, 1], got {self.slot_success_min}")
        if not 0 < self.availability_target <= 1:
            raise ValueError(f"availability target must be in (0, 1], got {self.availability_target}")
        bounds = [tier.below for tier in self.compensation_tiers]
        if bounds != sorted(bounds, reverse=True) or len(set(bounds)) != len(bounds):
            raise ValueError("compensation tiers must be listed from the highest 'below' down, each once")
        if bounds and bounds[0] > self.availability_target:
            raise ValueError("the first compensation tier cannot start above the availability target")
        if any(not 0 <= tier.percent <= 100 for tier in self.compensation_tiers):
            raise ValueError("compensation percent must be between 0 and 100")
        if self.claim_after_working_days < 1 or self.claim_window_days < 1:
            raise ValueError("claim window day counts must be positive")
        if not 1 <= self.silent_after_minutes <= 24 * 60:
            raise ValueError(f"silent_after_minutes must be from 1 to 1440, got {self.silent_after_minutes}")
