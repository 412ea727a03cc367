import logging
from datetime import timedelta
from decimal import Decimal

from pipeline.core.events import Rejection, UsageEvent
from pipeline.stream.booker import (
    RETRY_MESSAGE,
    Booker,
    BookingConfig,
    LoggedRetry,
    lanes,
    logged_retries,
)
from pipeline.stream.dlq import SourceMessage
from pipeline.stream.logs import JsonFormatter
from tests.unit.test_records import array, event


def booker(max_events: int) -> Booker:
    """A booker for decoding only: it never reaches its pool or its producer."""
    config = BookingConfig(
        "dlq",
        "alerts",
        Decimal("0.001"),
        0,
        timedelta(minutes=5),
        max_events=max_events,
        consumer_group="test",
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


def test_lanes_share_no_partition_keep_each_partitions_order_and_balance_bytes() -> None:
    sizes = {0: 10, 1: 1, 2: 4, 3: 5, 4: 1}  # records per partition, interleaved below
    records = [
        SourceMessage("t", p, offset, b"k", b"[" + b"x" * 98)
        for offset in range(10)
        for p in sorted(sizes)
        if offset < sizes[p]
    ]
    dealt = lanes(records, 2)
    assert sorted(r for lane in dealt for r in lane) == sorted(records)
    owners = {r.partition: i for i, lane in enumerate(dealt) for r in lane}
    assert all(owners[r.partition] == i for i, lane in enumerate(dealt) for r in lane)
    for lane in dealt:
        for p in {r.partition for r in lane}:
            assert [r.offset for r in lane if r.partition == p] == list(range(sizes[p]))
    # Heaviest first to the lightest lane: {0} (10 records) and {3, 2, 1, 4} (11).
    assert sorted(len(lane) for lane in dealt) == [10, 11]
    assert [len(lane) for lane in lanes(records, 9)] == [10, 5, 4, 1, 1]
    assert lanes(records, 1) == [records]
    assert lanes([], 2) == []


def test_lanes_weigh_batch_records_by_what_they_hold() -> None:
    heavy = SourceMessage("t", 0, 0, b"k", b" [" + b"x" * 5000)
    light = [SourceMessage("t", 1 + i, 0, b"k", b"x" * 100) for i in range(5)]
    dealt = lanes([heavy, *light], 2)
    assert dealt == [[heavy], light]


def test_a_take_of_single_event_records_is_one_lane_as_it_came() -> None:
    records = [SourceMessage("t", offset % 4, offset, b"k", b"{}") for offset in range(8)]
    assert lanes(records, 2) == [records]


def test_the_retries_a_worker_logged_are_read_back_in_either_log_format() -> None:
    def record(*args: object) -> logging.LogRecord:
        return logging.LogRecord("b", logging.WARNING, "", 0, RETRY_MESSAGE, args, None)

    text = "\n".join(
        [
            "[2026-12-02 03:49:33,003] [1608] [WARNING] "
            + record(10, 1, 0.1, "57P01", OSError("terminating connection")).getMessage(),
            "[2026-12-02 03:49:33,004] [1608] [WARNING] batch of 10 refused: splitting",
            JsonFormatter().format(record(3, 2, 0.2, None, TimeoutError())),
        ]
    )
    assert logged_retries(text) == [
        LoggedRetry(events=10, attempt=1, delay=0.1, sqlstate="57P01"),
        LoggedRetry(events=3, attempt=2, delay=0.2, sqlstate="None"),
    ]
