from datetime import timedelta
from decimal import Decimal

from pipeline.consume import Booker, BookingConfig
from pipeline.dlq import SourceMessage
from pipeline.events import Rejection, UsageEvent
from tests.unit.test_records import array, event


def booker(max_events: int) -> Booker:
    """A booker for decoding only: it never reaches its pool or its producer."""
    config = BookingConfig(
        "dlq", "alerts", Decimal("0.001"), 0, timedelta(minutes=5), max_events=max_events
    )
    return Booker(None, None, config)  # type: ignore[arg-type]


def test_chunks_hold_at_most_max_events_and_keep_every_event_in_order() -> None:
    records = [
        SourceMessage("t", 0, offset, b"k", array(event(), b"{}") if offset % 2 else event())
        for offset in range(5)
    ]
    chunks = list(booker(3).chunks(records))
    where = [[(m.offset, m.batch_index) for m in events] for events, _ in chunks]
    assert where == [[(0, None), (1, 0), (1, 1)], [(2, None), (3, 0), (3, 1)], [(4, None)]]
    kinds = [type(d) for _, decoded in chunks for d in decoded]
    assert kinds == [UsageEvent, UsageEvent, Rejection] * 2 + [UsageEvent]
    assert list(booker(3).chunks([])) == []


def test_a_batch_record_larger_than_a_chunk_is_spread_over_chunks() -> None:
    records = [SourceMessage("t", 1, 7, b"k", array(*[event() for _ in range(5)]))]
    chunks = list(booker(2).chunks(records))
    assert [[m.batch_index for m in events] for events, _ in chunks] == [[0, 1], [2, 3], [4]]
