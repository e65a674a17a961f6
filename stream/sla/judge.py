"""One slot judged in full: its verdict by its counts, then the exemption that covers it (docs/sla.md).

The one place the rule "unavailable by its counts, then look for an
exemption" is written. The live closer judges each slot as it closes with
:func:`judge`, and a service month's assessment judges its slots with the
same function, so a verdict on the topic and a line of the month report
cannot disagree.

Only an unavailable slot looks for an exemption: an available slot needs
none, and leaving ``exemption`` empty there keeps "exempt" meaning "would
have counted against the month".

Example:
    >>> from stream.sla.exemptions import Exemption
    >>> window = Exemption(start_ms=0, end_ms=600_000, app_id=None, clause="announced-maintenance")
    >>> down = judge("1400000001", 300_000, SlotCounts(requests=100, successes=50), [window])
    >>> down.verdict.unavailable, down.exempt, down.counts_against_month
    (True, True, False)
    >>> fine = judge("1400000001", 300_000, SlotCounts(requests=100, successes=99), [window])
    >>> fine.exemption is None, fine.counts_against_month
    (True, False)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from stream.sla.exemptions import Exemption, exemption_for
from stream.sla.policy import SlaPolicy
from stream.sla.verdict import SlotCounts, SlotVerdict, judge_slot

_DEFAULT_POLICY = SlaPolicy()


@dataclass(frozen=True)
class JudgedSlot:
    """A slot's verdict by its counts, and the exemption that covers it if it was unavailable."""

    slot_ms: int
    verdict: SlotVerdict
    exemption: Exemption | None

    @property
    def exempt(self) -> bool:
        """Unavailable by its counts, but covered by an exemption: it does not count against the month."""
        return self.exemption is not None

    @property
    def counts_against_month(self) -> bool:
        """Whether this slot is one of the month's unavailable slots."""
        return self.verdict.unavailable and self.exemption is None


def judge(
    app_id: str,
    slot_ms: int,
    counts: SlotCounts,
    exemptions: Sequence[Exemption],
    policy: SlaPolicy = _DEFAULT_POLICY,
) -> JudgedSlot:
    """Judge the app's slot starting at ``slot_ms`` by its counts, then by the exemptions (first match wins)."""
    verdict = judge_slot(counts, policy)
    covering = exemption_for(app_id, slot_ms, exemptions) if verdict.unavailable else None
    return JudgedSlot(slot_ms, verdict, covering)
