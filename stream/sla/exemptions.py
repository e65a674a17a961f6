"""Exemption windows and the slots they exempt (docs/sla.md §7).

An exemption is a time window, for one app or for all apps, with the clause
of the agreement it rests on. A slot that overlaps a window in any part is
exempt: what is left of its unavailable time is under 5 minutes, which does
not count.

Example:
    >>> e = Exemption(start_ms=1_000_000, end_ms=1_300_001, app_id=None,
    ...               clause="announced-maintenance", note="DB upgrade")
    >>> e.exempts("1400000001", slot_ms=900_000), e.exempts("x", slot_ms=1_500_000)
    (True, False)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from stream.sla.slots import slot_end_ms

CLAUSES: dict[str, str] = {
    "customer-fault": "the customer's own fault, negligence or authorised operation",
    "credentials": "lost or leaked credentials",
    "attack": "an attack on the customer's site or app",
    "documentation": "the product documentation was not followed",
    "traffic-surge": "a surge over 3,000 concurrent users not announced 5 working days ahead",
    "trial-feature": "a trial or non-public feature",
    "illegal-content": "illegal content",
    "announced-event": "an event announced by the provider in advance",
    "announced-maintenance": "maintenance announced in advance",
    "external-network": "a network or equipment failure outside the provider",
    "force-majeure": "force majeure",
    "not-provider": "not caused by the provider",
    "other-rule": "a case other rules exempt",
}
"""The grounds for exemption the agreement lists, in its order, by short key; an exemption names one key."""


MAX_NOTE_CHARS = 500
"""The longest note an exemption carries: a reason and a reference, shown on every statement and page it touches."""


@dataclass(frozen=True)
class Exemption:
    """Unavailability in ``[start_ms, end_ms)`` does not count for ``app_id`` (``None``: every app)."""

    start_ms: int
    end_ms: int
    app_id: str | None
    clause: str
    note: str = ""

    def __post_init__(self) -> None:
        if self.end_ms <= self.start_ms:
            raise ValueError("an exemption window must end after it starts")
        if self.clause not in CLAUSES:
            raise ValueError(f"unknown exemption clause {self.clause!r}; known clauses: {', '.join(CLAUSES)}")
        check_note(self.note)

    def exempts(self, app_id: str, slot_ms: int) -> bool:
        """Whether this window covers any part of the app's slot starting at ``slot_ms``."""
        if self.app_id is not None and self.app_id != app_id:
            return False
        return slot_ms < self.end_ms and self.start_ms < slot_end_ms(slot_ms)


def check_note(note: str) -> None:
    """Refuse a note longer than :data:`MAX_NOTE_CHARS` (``ValueError`` saying how long it is)."""
    if len(note) > MAX_NOTE_CHARS:
        raise ValueError(f"an exemption's note is {len(note):,} characters; at most {MAX_NOTE_CHARS} are allowed")


def exemption_for(app_id: str, slot_ms: int, exemptions: Sequence[Exemption]) -> Exemption | None:
    """The first exemption (in the given order) that covers the slot, or ``None``."""
    for exemption in exemptions:
        if exemption.exempts(app_id, slot_ms):
            return exemption
    return None


def in_lookup_order(configured: Sequence[Exemption], by_id: Mapping[str, Exemption]) -> tuple[Exemption, ...]:
    """The order a slot looks for its exemption in: the settings' first, then the topic's by exemption id.

    The live stream, replays and reports all use it, so the same clause is
    shown for a slot two windows cover.

    Example:
        >>> a = Exemption(0, 10, None, "attack")
        >>> b = Exemption(0, 10, None, "force-majeure")
        >>> [e.clause for e in in_lookup_order([a], {"x-2": a, "x-1": b})]
        ['attack', 'force-majeure', 'attack']
    """
    return (*configured, *(exemption for _, exemption in sorted(by_id.items())))
