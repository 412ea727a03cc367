import asyncio

from faust.types import TP

from pipeline.books.offsets import Booked, Gap, Span, find_gaps, spans
from pipeline.stream.refetch import to_seek
from pipeline.stream.usage_agent import rewind


def test_spans_group_offsets_per_partition_whatever_the_order() -> None:
    got = spans([("u", 1, 7), ("u", 0, 3), ("u", 1, 5), ("u", 0, 4), ("u", 1, 6)])
    assert got == [Span("u", 0, 3, 4), Span("u", 1, 5, 7)]


def test_a_batch_may_start_at_or_before_the_booked_offset() -> None:
    batch = [Span("u", 0, 10, 20), Span("u", 1, 3, 9), Span("u", 2, 0, 4)]
    booked = {("u", 0): Booked(10, None), ("u", 1): Booked(8, None)}
    assert find_gaps(batch, booked) == []


def test_a_batch_starting_past_the_booked_offset_is_a_gap() -> None:
    booked = {("u", 0): Booked(10, None), ("u", 1): Booked(4, None)}
    gaps = find_gaps([Span("u", 0, 11, 30), Span("u", 1, 4, 5)], booked)
    assert gaps == [Gap("u", 0, expected=10, got=11)]


def test_a_gap_still_there_after_rewinding_to_it_holds_no_records() -> None:
    batch = [Span("u", 0, 12, 30)]
    assert find_gaps(batch, {("u", 0): Booked(10, rewound_to=10)}) == []
    assert find_gaps(batch, {("u", 0): Booked(10, rewound_to=7)}) == [Gap("u", 0, 10, 12)]


def test_a_span_keeps_the_holes_between_its_records() -> None:
    [span] = spans([("u", 0, o) for o in (50, 51, 53, 54, 57, 52, 51)])
    assert span == Span("u", 0, 50, 57, holes=((55, 56),))


def test_a_batch_with_a_hole_above_the_booked_offset_is_rewound_to_the_books() -> None:
    [span] = spans([("u", 0, o) for o in (50, 51, 53)])
    assert find_gaps([span], {("u", 0): Booked(50, None)}) == [Gap("u", 0, 50, 53)]
    assert find_gaps([span], {}) == [Gap("u", 0, 50, 53)]  # never booked: rewind to its start


def test_a_hole_in_what_was_booked_already_or_left_after_a_rewind_is_no_gap() -> None:
    [span] = spans([("u", 0, o) for o in (40, 41, 43, 60)])
    assert find_gaps([span], {("u", 0): Booked(60, None)}) == []  # 42 was booked before
    assert find_gaps([span], {("u", 0): Booked(40, rewound_to=40)}) == []


U0, U1, U2 = TP("u", 0), TP("u", 1), TP("u", 2)


def test_a_partition_fetched_past_its_books_on_two_ticks_is_sought_back() -> None:
    now = {U0: (100, 95), U1: (40, 40), U2: (7, 3)}
    before = {U0: (100, 95), U1: (40, 40), U2: (6, 3)}  # U2 moved: still arriving
    assert to_seek(now, before, sought={}) == {U0: 95}


def test_a_partition_ahead_for_the_first_tick_is_not_sought_yet() -> None:
    assert to_seek({U0: (100, 95)}, before={}, sought={}) == {}


def test_a_range_still_ahead_after_its_seek_is_left_alone() -> None:
    now = {U0: (100, 95)}
    assert to_seek(now, now, sought={U0: (100, 95)}) == {}
    assert to_seek(now, now, sought={U0: (90, 85)}) == {U0: 95}


class _Consumer:
    """Faust's consumer as the rewind uses it: its assignment and the transport's commit,
    which returns False when the group rebalanced meanwhile."""

    def __init__(self, assigned: set[TP], takes: bool, revoke: bool = False) -> None:
        self.assigned, self.takes, self.revoke = assigned, takes, revoke
        self.committed: list[dict[TP, int]] = []

    def assignment(self) -> set[TP]:
        return self.assigned

    async def _commit(self, offsets: dict[TP, int]) -> bool:
        self.committed.append(offsets)
        if self.revoke:  # a rebalance took the partitions while the commit ran
            self.assigned = set()
        return self.takes


def test_a_rewind_counts_only_once_its_commit_took() -> None:
    took = _Consumer({U0, U1}, takes=True)
    assert asyncio.run(rewind(took, {U0: 10})) is True
    assert took.committed == [{U0: 10}]
    # Faust's `_commit` answers False after a rebalance: the rewind did not happen.
    assert asyncio.run(rewind(_Consumer({U0, U1}, takes=False), {U0: 10})) is False
    # ... and commits nothing for a partition no longer assigned, answering True.
    revoked = _Consumer({U1}, takes=True)
    assert asyncio.run(rewind(revoked, {U0: 10, U1: 4})) is False
    assert revoked.committed == []
    assert asyncio.run(rewind(_Consumer({U0}, takes=True, revoke=True), {U0: 10})) is False
