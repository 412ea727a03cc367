from pipeline.books.offsets import Booked, Gap, Span, find_gaps, spans


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
