from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID, uuid4

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core import plan as plan_module
from pipeline.core.alerts import AlertKind
from pipeline.core.deduction import Source
from pipeline.core.events import Rejection, UsageEvent
from pipeline.core.plan import BookContext, Subscription, plan_batch, tier_at
from pipeline.core.pricing import MarginConfig, MarginResolver, Price
from pipeline.errors import Reason

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
T0 = datetime(2025, 1, 1, tzinfo=UTC)
OPENAI = uuid4()
USER, BYOK, STRANGER = uuid4(), uuid4(), uuid4()
USD = Decimal("0.001")


def ctx(balance=1000, sources=None, booked=None):
    return BookContext(
        providers={"openai": OPENAI},
        prices={(OPENAI, "gpt-4o"): [
            Price(OPENAI, "gpt-4o", Decimal("0.005"), Decimal("0.015"), None, None, T0, None)]},
        margins=MarginResolver([
            MarginConfig(uuid4(), "tier", "free", None, None, Decimal("2"), T0, None),
            MarginConfig(uuid4(), "tier", "pro", None, None, Decimal("1.5"), T0, None)]),
        known_users=frozenset({USER, BYOK}),
        subscriptions={USER: [Subscription("pro", "active", T0, NOW + timedelta(days=1))]},
        byok_users=frozenset({BYOK}),
        balances={USER: balance},
        sources={USER: sources if sources is not None else [Source(uuid4(), balance, None, T0)]},
        booked=booked or {},
    )  # fmt: skip


def ev(user=USER, inp=1000, out=2000, model="gpt-4o", rid=None):
    return UsageEvent(
        request_id=rid or uuid4(), user_id=user, provider="openai", model=model,
        input_tokens=inp, output_tokens=out, started_at=NOW, completed_at=NOW,
    )  # fmt: skip


def test_charge_chain_and_sources_for_one_user():
    plan = plan_batch([ev(), ev(), ev()], ctx(balance=1000), USD, 100, NOW)
    assert [d.amount for d in plan.deductions] == [-53, -53, -53]
    assert [(d.balance_before, d.balance_after) for d in plan.deductions] == [
        (1000, 947), (947, 894), (894, 841)]  # fmt: skip
    assert plan.balances == {USER: 841}
    assert list(plan.source_amounts.values()) == [841]
    assert all(r.user_tier_at_request == "pro" for r in plan.usage_rows)


def test_byok_is_recorded_free_without_deduction():
    plan = plan_batch([ev(user=BYOK)], ctx(), USD, 100, NOW)
    [row] = plan.usage_rows
    assert row.credits_deducted == 0 and row.vendor_cost == 0 and row.deduction_record_id is None
    assert row.user_tier_at_request == "perpetual"
    assert plan.deductions == [] and plan.outcomes[0].kind == "byok"


def test_duplicates_within_batch_and_against_the_ledger():
    first = ev()
    same = first.model_copy()
    different = first.model_copy(update={"output_tokens": 1})
    booked = ev()
    plan = plan_batch(
        [first, same, different, booked],
        ctx(booked={booked.request_id: booked.fingerprint()}),
        USD, 100, NOW,
    )  # fmt: skip
    kinds = [o.kind for o in plan.outcomes]
    assert kinds == ["charged", "duplicate", "rejected", "duplicate"]
    assert plan.outcomes[2].rejection.reason is Reason.DUPLICATE_CONFLICT
    assert len(plan.deductions) == 1


def test_rejections_keep_their_position():
    plan = plan_batch(
        [Rejection(Reason.MALFORMED_JSON, "x"), ev(user=STRANGER), ev(model="gpt-9")],
        ctx(), USD, 100, NOW,
    )  # fmt: skip
    assert [(p, r.reason) for p, r in plan.rejections()] == [
        (0, Reason.MALFORMED_JSON), (1, Reason.UNKNOWN_USER), (2, Reason.UNKNOWN_MODEL)]  # fmt: skip
    assert plan.usage_rows == []


def test_overdraft_is_recorded_and_each_alert_fires_once():
    plan = plan_batch([ev(), ev(), ev()], ctx(balance=120), USD, 100, NOW)
    assert [d.balance_after for d in plan.deductions] == [67, 14, -39]
    assert [d.status for d in plan.deductions] == ["completed", "completed", "overdraft"]
    assert [a.kind for a in plan.alerts] == [AlertKind.LOW_BALANCE, AlertKind.EXHAUSTED]
    assert plan.source_amounts and min(plan.source_amounts.values()) == 0


def test_tier_falls_back_to_free_outside_the_subscription_period():
    subs = [Subscription("pro", "active", T0, T0 + timedelta(days=30)),
            Subscription("pro_max", "cancelled", T0, NOW + timedelta(days=1))]  # fmt: skip
    assert tier_at(subs, T0 + timedelta(days=1)) == "pro"
    assert tier_at(subs, T0 + timedelta(days=31)) == "free"


def test_of_overlapping_subscriptions_the_latest_started_gives_the_tier():
    upgrade = T0 + timedelta(days=10)
    subs = [Subscription("pro", "active", T0, T0 + timedelta(days=30)),
            Subscription("pro_max", "trial", upgrade, upgrade + timedelta(days=7)),
            Subscription("enterprise", "active", T0 - timedelta(days=1), T0 + timedelta(days=90))]  # fmt: skip
    assert tier_at(subs, T0 + timedelta(days=1)) == "pro"
    assert tier_at(subs, upgrade) == "pro_max"
    assert tier_at(subs, upgrade + timedelta(days=7)) == "pro"
    assert tier_at(subs, T0 - timedelta(hours=1)) == "enterprise"


@settings(max_examples=50)
@given(st.lists(st.tuples(st.integers(0, 50_000), st.integers(0, 50_000)), max_size=60),
       st.integers(-500, 5000))  # fmt: skip
def test_chain_is_exact_for_any_stream(tokens, balance):
    events = [ev(inp=i, out=o) for i, o in tokens]
    sources = [Source(uuid4(), max(balance, 0), None, T0)]
    plan = plan_batch(events, ctx(balance=balance, sources=sources), USD, 100, NOW)
    running = balance
    for d in plan.deductions:
        assert d.balance_before == running and d.balance_after == running + d.amount < running
        running = d.balance_after
    assert plan.balances.get(USER, balance) == running
    charged = sum(r.credits_deducted for r in plan.usage_rows)
    assert running == balance - charged


def test_rows_carry_each_field_where_its_name_says():
    """The rows are built positionally: every field must still land in its own column."""
    event = UsageEvent(
        request_id=uuid4(), user_id=USER, subscription_id=uuid4(), provider="openai",
        model="gpt-4o", input_tokens=1001, output_tokens=2002, cached_input_tokens=303,
        cache_write_tokens=44, request_type="chat", streaming_segments=5, started_at=NOW,
        completed_at=NOW + timedelta(milliseconds=1234), status="partial",
        error_message="cut", is_streaming_complete=False, region="eu-west-1",
        gateway_cost_usd=Decimal("0.25"),
    )  # fmt: skip
    plan = plan_batch([event], ctx(balance=1000), USD, 100, NOW)
    [row], [deduction] = plan.usage_rows, plan.deductions
    for name in ("request_id", "user_id", "subscription_id", "input_tokens", "output_tokens",
                 "cached_input_tokens", "cache_write_tokens", "request_type",
                 "streaming_segments", "error_message", "is_streaming_complete", "region",
                 "gateway_cost_usd"):  # fmt: skip
        assert getattr(row, name) == getattr(event, name), name
    assert (row.model_id, row.provider_id, row.status) == ("gpt-4o", OPENAI, "partial")
    assert (row.request_started_at, row.request_completed_at) == (NOW, event.completed_at)
    assert row.processing_time_ms == 1234 and row.user_tier_at_request == "pro"
    assert row.event_fingerprint == event.fingerprint()
    assert row.deduction_record_id == deduction.id and deduction.request_id == event.request_id
    assert (deduction.user_id, deduction.amount) == (USER, -row.credits_deducted)
    after = 1000 - row.credits_deducted
    assert (deduction.balance_before, deduction.balance_after) == (1000, after)
    assert deduction.token_vendor_cost == row.vendor_cost
    assert deduction.margin_multiplier == row.margin_multiplier == Decimal("1.5")
    assert deduction.gross_margin == row.credit_value_usd - row.vendor_cost
    assert (deduction.reason, deduction.status) == ("api_chat", "completed")


def test_deduction_ids_are_the_version_4_uuids_of_the_random_bytes(monkeypatch):
    pool = bytes(range(256)) * 16
    monkeypatch.setattr(plan_module.os, "urandom", lambda n: pool[:n])
    ids = plan_module.RandomIds()
    expected = [UUID(bytes=pool[i : i + 16], version=4) for i in range(0, 16 * 256, 16)]
    assert [ids.next() for _ in expected] == expected


def test_a_request_counts_on_its_utc_day_whatever_its_offset():
    late = datetime(2026, 11, 24, 23, 30, tzinfo=timezone(timedelta(hours=-2)))
    event = ev().model_copy(update={"started_at": late, "completed_at": late})
    [row] = plan_batch([event], ctx(), USD, 100, NOW).usage_rows
    assert row.usage_date == date(2026, 11, 25)
