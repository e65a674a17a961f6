"""The voucher owed for a month below target (docs/sla.md §5).

Example:
    >>> from fractions import Fraction
    >>> from decimal import Decimal
    >>> compensation_percent(Fraction(995, 1000))  # exactly 99.5%: the 10% tier
    10
    >>> voucher(Decimal("1234.56"), 20)
    Decimal('246.91')
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

from stream.sla.policy import SlaPolicy

_DEFAULT_POLICY = SlaPolicy()
CENT = Decimal("0.01")


def compensation_percent(availability: Fraction, policy: SlaPolicy = _DEFAULT_POLICY) -> int:
    """The voucher's share of the fee in percent; 0 when the month met its target.

    Tier bounds are inclusive on the lower side: a tier applies when
    availability is strictly below its ``below``.
    """
    percent = 0
    for tier in policy.compensation_tiers:
        if availability < tier.below:
            percent = tier.percent
    return percent


def voucher(monthly_fee: Decimal, percent: int) -> Decimal:
    """``percent`` of the month's fee, to the cent (half up), never more than the fee."""
    if not monthly_fee.is_finite() or monthly_fee < 0 or monthly_fee != monthly_fee.quantize(CENT):
        raise ValueError(f"monthly fee must be a non-negative amount in whole cents, got {monthly_fee}")
    owed = (monthly_fee * percent / 100).quantize(CENT, rounding=ROUND_HALF_UP)
    return min(owed, monthly_fee)
