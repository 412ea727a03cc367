"""The live view's pure side: per-user/day deltas, their JSON form, path ids, the body."""

import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from itertools import pairwise
from uuid import UUID, uuid4

from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.live_usage import (
    DayTotals,
    day_deltas,
    day_start,
    merge_json,
    paced_writes,
    parse_user_id,
    view,
)
from pipeline.core.plan import UsageRow
from pipeline.core.rollup import user_days

ALICE, BOB = uuid4(), uuid4()
NOON = datetime(2026, 3, 1, 12, tzinfo=UTC)


def row(user=ALICE, started=NOON, inp=1000, out=2000, cost="0.035", credits=53) -> UsageRow:
    return UsageRow(
        request_id=uuid4(), user_id=user, subscription_id=None, model_id="gpt-4o",
        provider_id=uuid4(), input_tokens=inp, output_tokens=out, cached_input_tokens=0,
        cache_write_tokens=0, vendor_cost=Decimal(cost), margin_multiplier=Decimal("1.5"),
        credit_value_usd=Decimal(credits) / 1000, credits_deducted=credits, request_type="chat",
        streaming_segments=None, request_started_at=started, request_completed_at=started,
        processing_time_ms=10, status="success", error_message=None, is_streaming_complete=True,
        user_tier_at_request="pro", region=None, deduction_record_id=None, event_fingerprint=b"f",
    )  # fmt: skip


def test_rows_sum_per_user_and_utc_day_of_the_request_start():
    # 01:30 at UTC+03:00 is 22:30 UTC the day before: it belongs to 28 February.
    east = timezone(timedelta(hours=3))
    late = datetime(2026, 3, 1, 1, 30, tzinfo=east)
    rows = [row(), row(inp=10, out=20, cost="0.00000001", credits=1), row(user=BOB),
            row(started=late, cost="0.5", credits=750)]  # fmt: skip
    assert day_deltas(user_days(rows)) == {
        (ALICE, date(2026, 3, 1)): DayTotals(2, 1010, 2020, 54, Decimal("0.03500001")),
        (BOB, date(2026, 3, 1)): DayTotals(1, 1000, 2000, 53, Decimal("0.035")),
        (ALICE, date(2026, 2, 28)): DayTotals(1, 1000, 2000, 750, Decimal("0.5")),
    }


def test_no_rows_no_deltas():
    assert day_deltas(user_days([])) == {}


def test_json_keeps_money_exact_and_integers_whole():
    totals = DayTotals(3, 1, 2, 70, Decimal("0.00000003"))
    wire = json.loads(json.dumps(totals.to_json()))
    assert wire["vendor_cost"] == "0.00000003" and wire["credits"] == 70
    assert DayTotals.from_json(wire) == totals
    assert DayTotals.from_json({}) == DayTotals()


costs = st.decimals(min_value=0, max_value=99, places=8, allow_nan=False, allow_infinity=False)
rows_strategy = st.lists(
    st.tuples(st.sampled_from([ALICE, BOB]), st.integers(0, 2), st.integers(0, 10**6), costs),
    max_size=30,
)


@given(rows_strategy, st.lists(st.integers(0, 30), max_size=4))
def test_merging_batch_deltas_through_json_equals_summing_all_rows(spec, cuts):
    rows = [row(user=u, started=NOON + timedelta(days=d), inp=n, cost=str(c), credits=n)
            for u, d, n, c in spec]  # fmt: skip
    bounds = [0, *sorted(min(c, len(rows)) for c in cuts), len(rows)]
    table: dict[tuple[UUID, date], dict] = {}
    for lo, hi in pairwise(bounds):
        for key, delta in day_deltas(user_days(rows[lo:hi])).items():
            current = json.loads(json.dumps(table.get(key, DayTotals().to_json())))
            table[key] = merge_json(current, delta.to_json())
    assert {k: DayTotals.from_json(v) for k, v in table.items()} == day_deltas(user_days(rows))


def test_day_start_is_utc_midnight_inside_the_days_window():
    start = day_start(date(2026, 3, 1))
    assert datetime.fromtimestamp(start, UTC) == datetime(2026, 3, 1, tzinfo=UTC)
    assert start % 86400 == 0  # Faust's tumbling windows are epoch aligned


def test_user_id_from_the_path():
    user = uuid4()
    assert parse_user_id(str(user)) == user
    assert parse_user_id(str(user).upper()) == user
    assert parse_user_id("nope") == "user_id must be a UUID, got 'nope'"
    reason = parse_user_id("x" * 500)
    assert isinstance(reason, str) and len(reason) < 120 and "\n" not in reason


def test_view_body_is_marked_live_and_best_effort():
    body = view(ALICE, date(2026, 3, 1), DayTotals(2, 5, 6, 7, Decimal("0.1")))
    assert body == {
        "user_id": str(ALICE), "day": "2026-03-01", "requests": 2, "input_tokens": 5,
        "output_tokens": 6, "credits": 7, "vendor_cost": "0.1", "source": "live",
        "best_effort": True, "note": body["note"],
    }  # fmt: skip
    assert "books" in body["note"]
    assert view(BOB, date(2026, 3, 1), DayTotals())["requests"] == 0


def test_paced_writes_spread_an_interval_of_deltas_evenly_over_its_ticks() -> None:
    # 1,000 deltas, 50 ticks an interval: 20 a tick, nothing owed
    assert paced_writes(0.0, 1000, 1 / 50, 50) == (20, 0.0)
    # never more than `most` a tick, and no debt piles up beyond it
    assert paced_writes(0.0, 100_000, 1 / 50, 50) == (50, 0.0)
    # 3 deltas, 36,000 ticks an interval (a 1-hour interval, 0.1 s ticks): fractions carry
    owed, written, ticks = 0.0, 0, 0
    while not written:
        count, owed = paced_writes(owed, 3, 1 / 36_000, 50)
        written, ticks = written + count, ticks + 1
    assert written == 1 and 11_999 <= ticks <= 12_001  # one write a third of an hour in


def test_paced_writes_drain_a_steady_backlog_in_about_one_interval() -> None:
    pending, owed, arrivals = 0, 0.0, 30  # 30 new (user, day) keys a tick
    for _ in range(500):
        pending += arrivals
        count, owed = paced_writes(owed, pending, 1 / 50, 10_000)
        pending -= count
    # Little's law: what waits is the arrivals of one interval (50 ticks)
    assert 50 * arrivals * 0.95 <= pending <= 50 * arrivals * 1.05
