"""stream/live/cursors.py: which records of a partition continue its reading after a seek, and which are stale."""

from __future__ import annotations

import pytest

from stream.live.cursors import Cursors

TP = "requests:0"


def test_an_unpositioned_partition_has_no_cursor_and_remembers_what_went_by() -> None:
    cursors = Cursors()
    assert cursors.get(TP) is None
    cursors.saw(TP, [5, 6, 7])  # dropped: the partition is positioned first
    cursors.sought(TP, applied=[4])
    cursor = cursors.get(TP)
    assert cursor is not None and (cursor.applied, cursor.skip_above) == (4, 7)
    assert cursors.admit(TP, [8, 9]) == [], "fetched before the seek: stale"
    assert cursors.admit(TP, [5, 6, 7, 8]) == [5, 6, 7, 8], "read again from the seek: all of them continue"
    assert cursors.admit(TP, [9]) == [9]


def test_a_seek_forward_drops_nothing_the_fence_would_not() -> None:
    cursors = Cursors()
    cursors.sought(TP, applied=[-1])
    assert cursors.admit(TP, [0, 1, 2]) == [0, 1, 2]
    cursors.sought(TP, applied=[10])  # another worker applied up to 10 meanwhile
    assert cursors.get(TP).skip_above is None
    assert cursors.admit(TP, [3, 4]) == [3, 4], "stale but harmless: Redis's offset fence skips them"


def test_a_seek_back_after_lost_writes_skips_until_the_reread_starts() -> None:
    cursors = Cursors()
    cursors.sought(TP, applied=[99])
    assert cursors.admit(TP, list(range(100, 120))) == list(range(100, 120))
    cursors.sought(TP, applied=[109])  # Redis came back holding 109
    assert cursors.admit(TP, [120, 121]) == [], "the rest of the old fetch"
    assert cursors.admit(TP, [110, 111]) == [110, 111]
    assert cursors.admit(TP, [120, 121]) == [120, 121], "after the re-read caught up, later records continue"


def test_forgetting_keeps_how_far_the_partition_was_delivered() -> None:
    cursors = Cursors()
    cursors.sought(TP, applied=[-1])
    cursors.admit(TP, [0, 1, 2, 3])
    cursors.forget([TP])
    assert cursors.get(TP) is None
    cursors.sought(TP, applied=[1])
    assert cursors.get(TP).skip_above == 3


def test_admitting_needs_a_cursor() -> None:
    with pytest.raises(KeyError):
        Cursors().admit(TP, [1])
