import json
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.events import Rejection, UsageEvent, decode
from pipeline.core.records import (
    BATCH_RECORD_MAX,
    decode_record,
    group_by_partition,
    is_batch,
    partition_of,
    split,
)
from pipeline.errors import Reason
from pipeline.stream.dlq import SourceMessage, dead_letter, from_record, to_headers
from tests.unit.test_events import event

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
SKEW = timedelta(minutes=5)


def array(*events: bytes) -> bytes:
    return b"[" + b", ".join(events) + b"]"


def test_an_object_record_is_one_event_without_index():
    [(index, item)] = decode_record(event(), NOW, SKEW)
    assert index is None and isinstance(item, UsageEvent)


def test_a_batch_record_yields_each_event_in_order_with_its_index():
    raws = [event(input_tokens=n) for n in (10, 20, 30)]
    items = decode_record(b"  \n" + array(*raws), NOW, SKEW)
    assert [i for i, _ in items] == [0, 1, 2]
    assert [e.input_tokens for _, e in items] == [10, 20, 30]


def test_a_batch_event_decodes_exactly_as_the_same_event_alone():
    usage = {"prompt_tokens": 10, "completion_tokens": 5}
    raw = event(usage=usage, input_tokens=None, output_tokens=None)
    alone = decode(raw, NOW, SKEW)
    [(_, batched)] = decode_record(array(raw), NOW, SKEW)
    assert isinstance(alone, UsageEvent) and batched == alone
    assert batched.fingerprint() == alone.fingerprint()


def test_bad_events_in_a_batch_are_rejected_one_by_one():
    future = (NOW + timedelta(hours=1)).isoformat()
    raws = [event(), event(output_tokens=-1), b"7", event(started_at=future, completed_at=future)]
    items = decode_record(array(*raws), NOW, SKEW)
    kinds = [type(item).__name__ for _, item in items]
    assert kinds == ["UsageEvent", "Rejection", "Rejection", "Rejection"]
    assert [i for i, _ in items] == [0, 1, 2, 3]
    assert all(r.reason is Reason.SCHEMA_VIOLATION for _, r in items[1:])
    assert "future" in items[3][1].detail


FUTURE = (NOW + timedelta(hours=1)).isoformat()


@pytest.mark.parametrize(
    "raws",
    [
        [event(input_tokens=n) for n in range(1, 40)],  # all flat and valid: one pass
        [
            event(),
            event(
                usage={"prompt_tokens": 10, "completion_tokens": 5},
                input_tokens=None,
                output_tokens=None,
            ),
        ],
        [event(), event(cached_input_tokens=5000)],
        [event(), event(started_at=FUTURE, completed_at=FUTURE)],
        [event(error_message='"usage"'), event(region=" eu ")],
    ],
)
def test_every_event_of_a_batch_record_gets_what_it_gets_alone(raws):
    items = decode_record(array(*raws), NOW, SKEW)
    assert items == [(i, decode(raw, NOW, SKEW)) for i, raw in enumerate(raws)]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"[" + event(), Reason.MALFORMED_JSON),
        (b"[1, 2] 3", Reason.MALFORMED_JSON),
        (b"[\xff]", Reason.MALFORMED_JSON),
        (b"[]", Reason.SCHEMA_VIOLATION),
        (array(*[b"{}"] * (BATCH_RECORD_MAX + 1)), Reason.SCHEMA_VIOLATION),
    ],
)
def test_a_malformed_batch_record_is_one_rejection(raw, reason):
    [(index, item)] = decode_record(raw, NOW, SKEW)
    assert index is None and isinstance(item, Rejection) and item.reason is reason


def test_split_keeps_each_elements_original_bytes():
    raws = [event(region="café"), b'{"a": [1, {"b": "]"}]}', b'"x,y"']
    assert split(array(*raws)) == tuple(raws)
    assert split(b" [ ] ") == ()
    with pytest.raises(ValueError):
        split(b"{}")


def test_a_batch_events_dead_letter_carries_its_own_bytes_and_index():
    raws = [event(), event(output_tokens=-1)]
    record = SourceMessage("usage.events", 2, 41, b"k", array(*raws), 5, batch_index=1)
    letter = dead_letter(record, Reason.SCHEMA_VIOLATION, "output_tokens", NOW)
    assert letter.value == raws[1] and letter.source_index == 1
    headers = to_headers(letter)
    assert ("dlq.source.index", b"1") in headers
    back = from_record(headers, letter.key, letter.value)
    assert back.source_index == 1 and back.source_offset == 41
    single = dead_letter(SourceMessage("t", 0, 1, None, b"{"), Reason.MALFORMED_JSON, "x", NOW)
    assert single.value == b"{" and "dlq.source.index" not in dict(to_headers(single))


@given(st.lists(st.integers(0, 200), min_size=1, max_size=300), st.integers(1, 12))
def test_grouping_keeps_each_users_partition_and_order(users, size):
    keys = [f"user-{u}".encode() for u in users]
    events = [(k, json.dumps({"n": n, "k": k.decode()}).encode()) for n, k in enumerate(keys)]
    out = group_by_partition(events, 4, size)
    seen = []
    for key, value in out:
        assert is_batch(value)
        elements = [json.loads(e) for e in split(value)]
        assert 1 <= len(elements) <= size
        assert {partition_of(e["k"].encode(), 4) for e in elements} == {partition_of(key, 4)}
        seen += elements
    assert sorted(e["n"] for e in seen) == list(range(len(events)))
    for p in range(4):
        ordered = [e["n"] for e in seen if partition_of(e["k"].encode(), 4) == p]
        assert ordered == sorted(ordered)


def test_unkeyed_lines_stay_single_records_and_sizes_are_checked():
    assert group_by_partition([(None, b"{oops")], 4) == [(None, b"{oops")]
    with pytest.raises(ValueError):
        group_by_partition([], 4, BATCH_RECORD_MAX + 1)


def test_partitioning_matches_kafkas_murmur2():
    from aiokafka.partitioner import DefaultPartitioner

    for key in (b"a", b"user-1", str(uuid4()).encode()):
        assert partition_of(key, 7) == DefaultPartitioner()(key, list(range(7)), list(range(7)))
