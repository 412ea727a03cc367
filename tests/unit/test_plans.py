"""Pure rules of subscriptions and coupons: proration, the tier catalog, coupon checks."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pipeline.money import coupons
from pipeline.money.subscriptions import (
    CATALOG,
    Proration,
    Refusal,
    Refused,
    Subscription,
    TierPlan,
    prorate,
    resolve_plan,
)

D = Decimal
START = datetime(2025, 3, 1, 12, tzinfo=UTC)
PRO_SUB = Subscription("pro", "active", D("19.00"), 20_000, START, START + timedelta(days=30))


def test_the_seeds_upgrade_numbers() -> None:
    assert prorate(PRO_SUB, CATALOG["pro_max"], START + timedelta(days=15)) == Proration(
        "pro", "pro_max", 15, 30, D("9.50"), D("19.50"), D("10.00"), 25_000
    )


def test_cents_round_half_up_and_credits_round_down() -> None:
    result = prorate(PRO_SUB, CATALOG["pro_max"], START + timedelta(days=20))
    assert isinstance(result, Proration)
    # 19 x 10/30 = 6.333.., 39 x 10/30 = 13.00, 50000 x 10/30 = 16666.6..
    assert (result.unused_value_usd, result.new_cost_usd, result.net_charge_usd) == (
        D("6.33"), D("13.00"), D("6.67"),
    )  # fmt: skip
    assert result.credits == 16_666
    odd = TierPlan("enterprise_pro", D("20.05"), 20_001)
    halves = prorate(PRO_SUB, odd, START + timedelta(days=15))
    assert isinstance(halves, Proration)
    assert (halves.new_cost_usd, halves.credits) == (D("10.03"), 10_000)  # 10.025 -> 10.03


def test_days_are_utc_calendar_days_whatever_the_offset() -> None:
    late_evening_east = (START + timedelta(days=15, hours=11)).astimezone(
        timezone(timedelta(hours=9))
    )
    result = prorate(PRO_SUB, CATALOG["pro_max"], late_evening_east)
    assert isinstance(result, Proration)
    assert result.days_remaining == 15


def test_upgrade_refusals() -> None:
    during = START + timedelta(days=3)
    cancelled = Subscription(
        "pro", "cancelled", D(19), 20_000, PRO_SUB.period_start, PRO_SUB.period_end
    )
    cases = [
        (prorate(PRO_SUB, CATALOG["pro"], during), Refusal.SAME_TIER),
        (prorate(PRO_SUB, TierPlan("free", D(0), 0), during), Refusal.NOT_AN_UPGRADE),
        (prorate(PRO_SUB, TierPlan("enterprise_pro", D(99), 10), during), Refusal.NOT_AN_UPGRADE),
        (prorate(PRO_SUB, CATALOG["pro_max"], PRO_SUB.period_end), Refusal.PERIOD_ENDED),
        (prorate(cancelled, CATALOG["pro_max"], during), Refusal.NOT_ACTIVE),
    ]
    assert [r.reason if isinstance(r, Refused) else r for r, _ in cases] == [c for _, c in cases]


def test_the_catalog_holds_only_the_seeds_prices() -> None:
    assert resolve_plan("pro") == TierPlan("pro", D("19.00"), 20_000)
    assert resolve_plan("pro_max") == TierPlan("pro_max", D("39.00"), 50_000)
    assert resolve_plan("enterprise_max", D("499.00"), 1_000_000) == TierPlan(
        "enterprise_max", D("499.00"), 1_000_000
    )
    refusals = [
        resolve_plan("gold"),
        resolve_plan("perpetual"),
        resolve_plan("enterprise_pro"),
        resolve_plan("pro", D(5)),
        resolve_plan("pro", D("5.001"), 10),
        resolve_plan("pro", D(5), -1),
    ]
    assert [r.reason for r in refusals if isinstance(r, Refused)] == [
        Refusal.UNKNOWN_TIER, Refusal.UNKNOWN_TIER, Refusal.PLAN_REQUIRED, Refusal.PLAN_REQUIRED,
        Refusal.INVALID_PLAN, Refusal.INVALID_PLAN,
    ]  # fmt: skip


@given(
    days_used=st.integers(min_value=0, max_value=29),
    old_price=st.decimals(min_value=0, max_value=1000, places=2),
    extra_price=st.decimals(min_value=0, max_value=1000, places=2),
    old_credits=st.integers(min_value=0, max_value=10**6),
    extra_credits=st.integers(min_value=0, max_value=10**6),
)
def test_proration_adds_up(
    days_used: int, old_price: Decimal, extra_price: Decimal, old_credits: int, extra_credits: int
) -> None:
    current = Subscription(
        "pro", "active", old_price, old_credits, START, START + timedelta(days=30)
    )
    new = TierPlan("pro_max", old_price + extra_price, old_credits + extra_credits)
    result = prorate(current, new, START + timedelta(days=days_used))
    assert isinstance(result, Proration)
    assert result.days_remaining == 30 - days_used
    assert result.net_charge_usd == result.new_cost_usd - result.unused_value_usd >= 0
    assert result.new_cost_usd <= new.price_usd
    assert 0 <= result.credits <= new.monthly_credits
    assert result.credits * 30 <= new.monthly_credits * result.days_remaining


# coupons

NOW = datetime(2025, 6, 1, tzinfo=UTC)
COUPON = coupons.Coupon(
    uuid.uuid4(), "credits", D("20.00"), NOW - timedelta(days=1), NOW + timedelta(days=1), True,
    None,
)  # fmt: skip
USD_PER_CREDIT = D("0.001")
LIMITS = coupons.Limits(max_total_uses=10, max_uses_per_user=1, total_uses=0)


def refusal(
    coupon: coupons.Coupon = COUPON,
    limits: coupons.Limits = LIMITS,
    rules: list[tuple[str, Any]] | None = None,
    user_uses: int = 0,
    has_purchased: bool = False,
    usd_per_credit: Decimal = USD_PER_CREDIT,
) -> str | None:
    refused = coupons.check(
        coupon, limits, rules or [], now=NOW, user_uses=user_uses, has_purchased=has_purchased,
        usd_per_credit=usd_per_credit,
    )  # fmt: skip
    return None if refused is None else str(refused.reason)


def test_a_valid_coupon_passes_and_is_worth_whole_credits() -> None:
    assert refusal() is None
    assert refusal(rules=[("first_purchase_only", {"value": True})]) is None
    assert refusal(rules=[("min_purchase_usd", {"value": 0})]) is None
    assert coupons.credits_for(D("20.00"), D("0.001")) == 20_000
    assert coupons.credits_for(D("20.00"), D("0.003")) == 6_666


def test_each_coupon_refusal() -> None:
    assert refusal(replace(COUPON, deleted_at=NOW)) == "deleted"
    assert refusal(replace(COUPON, is_active=False)) == "inactive"
    assert refusal(replace(COUPON, valid_from=NOW + timedelta(seconds=1))) == "not_yet_valid"
    assert refusal(replace(COUPON, valid_until=NOW)) == "expired"
    assert refusal(replace(COUPON, discount_type="percentage")) == "not_a_credits_coupon"
    assert refusal(replace(COUPON, discount_value=D("0.50")), usd_per_credit=D(1)) == "worthless"
    assert refusal(limits=coupons.Limits(10, 1, 10)) == "total_limit_reached"
    assert refusal(limits=coupons.Limits(None, 3, 99), user_uses=3) == "user_limit_reached"
    assert refusal(limits=coupons.NO_LIMITS_ROW, user_uses=1) == "user_limit_reached"
    first = [("first_purchase_only", {"value": True})]
    assert refusal(rules=first, has_purchased=True) == "first_purchase_only"
    assert refusal(rules=[("min_purchase_usd", {"value": "10"})]) == "min_purchase"
    assert refusal(rules=[("min_purchase_usd", {"value": "ten"})]) == "unsupported_rule"
    assert refusal(rules=[("country_in", {"value": ["DE"]})]) == "unsupported_rule"
