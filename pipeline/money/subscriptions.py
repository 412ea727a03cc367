"""Subscriptions: subscribe (a month's credits) and upgrade (prorated), via `credits.grant`.

Tier catalog: the seed prices only `pro` (USD 19, 20,000 credits a month) and `pro_max`
(USD 39, 50,000). It is silent on `free`, `enterprise_pro` and `enterprise_max`, so for
those the caller passes price and credits (enterprise plans are negotiated anyway).
`perpetual` is a license (`perpetual_license`), not a subscription.

A billing cycle is 30 days, as in the seed. Proration counts whole UTC calendar days:
days_in_cycle = end day - start day, days_remaining = end day - upgrade day. Dollar
amounts are rounded half-up to cents, each on its own (net = new cost - unused value, so
the stored row adds up); prorated credits are new monthly credits x days_remaining /
days_in_cycle, rounded down.

Every write locks the user's balance row first (`credits.lock_balance`, the order every
money movement uses), then the subscription row, and grants inside the same transaction
(`grant`'s own transaction becomes a savepoint), so an upgrade is all or nothing and a
repeated upgrade finds the tier already changed and grants nothing. Grant idempotency keys:
`subscription:<id>:<period start>` and `proration_event:<id>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import tuple_row

from pipeline.errors import Refused
from pipeline.money.credits import Grant, grant, lock_balance

SUBSCRIPTION_TIERS = ("free", "pro", "pro_max", "enterprise_pro", "enterprise_max")
CYCLE_DAYS = 30
CENTS = Decimal("0.01")
LIVE_STATUSES = ("active", "trial")


@dataclass(frozen=True, slots=True)
class TierPlan:
    tier: str
    price_usd: Decimal
    monthly_credits: int


CATALOG = {
    "pro": TierPlan("pro", Decimal("19.00"), 20_000),
    "pro_max": TierPlan("pro_max", Decimal("39.00"), 50_000),
}


class Refusal(StrEnum):
    """Why a subscription change was refused (no subscription, proration or credit written)."""

    UNKNOWN_TIER = "unknown_tier"
    PLAN_REQUIRED = "plan_required"
    INVALID_PLAN = "invalid_plan"
    UNKNOWN_USER = "unknown_user"
    ALREADY_SUBSCRIBED = "already_subscribed"
    UNKNOWN_SUBSCRIPTION = "unknown_subscription"
    NOT_ACTIVE = "not_active"
    PERIOD_ENDED = "period_ended"
    SAME_TIER = "same_tier"
    NOT_AN_UPGRADE = "not_an_upgrade"


@dataclass(frozen=True, slots=True)
class Subscribed:
    subscription_id: UUID
    plan: TierPlan
    period_start: datetime
    period_end: datetime
    balance_before: int
    balance_after: int


@dataclass(frozen=True, slots=True)
class Proration:
    from_tier: str
    to_tier: str
    days_remaining: int
    days_in_cycle: int
    unused_value_usd: Decimal
    new_cost_usd: Decimal
    net_charge_usd: Decimal
    credits: int


@dataclass(frozen=True, slots=True)
class Upgraded:
    proration_event_id: UUID
    subscription_id: UUID
    proration: Proration
    balance_before: int
    balance_after: int
    applied: bool
    """False when this upgrade had been made already (nothing changed)."""


@dataclass(frozen=True, slots=True)
class Subscription:
    tier: str
    status: str
    price_usd: Decimal
    monthly_credits: int
    period_start: datetime
    period_end: datetime


def resolve_plan(
    tier: str, price_usd: Decimal | None = None, monthly_credits: int | None = None
) -> TierPlan | Refused[Refusal]:
    """The catalog's plan for `tier`, or the caller's price and credits (both or neither)."""
    if tier not in SUBSCRIPTION_TIERS:
        return Refused(Refusal.UNKNOWN_TIER, f"{tier!r} (one of {', '.join(SUBSCRIPTION_TIERS)})")
    if price_usd is None and monthly_credits is None:
        if tier in CATALOG:
            return CATALOG[tier]
        return Refused(Refusal.PLAN_REQUIRED, f"the seed has no price for {tier}; pass both")
    if price_usd is None or monthly_credits is None:
        return Refused(Refusal.PLAN_REQUIRED, "pass both the price and the monthly credits")
    if price_usd < 0 or price_usd != price_usd.quantize(CENTS) or monthly_credits < 0:
        return Refused(Refusal.INVALID_PLAN, "price must be whole cents >= 0, credits >= 0")
    return TierPlan(tier, price_usd, monthly_credits)


def _utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def _cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENTS, rounding=ROUND_HALF_UP)


def prorate(current: Subscription, new: TierPlan, now: datetime) -> Proration | Refused[Refusal]:
    """The seed's upgrade proration at `now` (pure)."""
    if current.status not in LIVE_STATUSES:
        return Refused(Refusal.NOT_ACTIVE, f"the subscription is {current.status}")
    if new.tier == current.tier:
        return Refused(Refusal.SAME_TIER, f"the subscription is {current.tier} already")
    if new.price_usd < current.price_usd or new.monthly_credits < current.monthly_credits:
        return Refused(
            Refusal.NOT_AN_UPGRADE, f"{new.tier} costs or grants less than {current.tier}"
        )
    end = _utc_day(current.period_end)
    days_in_cycle = (end - _utc_day(current.period_start)).days
    days_remaining = min((end - _utc_day(now)).days, days_in_cycle)
    if now >= current.period_end or days_remaining <= 0:
        return Refused(Refusal.PERIOD_ENDED, f"the period ended {current.period_end.isoformat()}")
    unused = _cents(current.price_usd * days_remaining / days_in_cycle)
    new_cost = _cents(new.price_usd * days_remaining / days_in_cycle)
    return Proration(
        from_tier=current.tier,
        to_tier=new.tier,
        days_remaining=days_remaining,
        days_in_cycle=days_in_cycle,
        unused_value_usd=unused,
        new_cost_usd=new_cost,
        net_charge_usd=new_cost - unused,
        credits=new.monthly_credits * days_remaining // days_in_cycle,
    )


def subscribe(
    conn: psycopg.Connection[Any], user_id: UUID, plan: TierPlan, now: datetime
) -> Subscribed | Refused[Refusal]:
    """Start a monthly subscription at `now` and grant its first month's credits."""
    period_end = now + timedelta(days=CYCLE_DAYS)
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        cur.execute("SELECT 1 FROM users WHERE id = %s", (user_id,))
        if cur.fetchone() is None:
            return Refused(Refusal.UNKNOWN_USER, f"no user {user_id}")
        before = lock_balance(cur, user_id)
        cur.execute(
            """
            SELECT id, tier::text FROM subscription_monetization
            WHERE user_id = %s AND status = ANY(%s::subscription_status[])
              AND current_period_end > %s
            """,
            (user_id, list(LIVE_STATUSES), now),
        )
        live = cur.fetchone()
        if live is not None:
            return Refused(Refusal.ALREADY_SUBSCRIBED, f"{live[1]} subscription {live[0]}")
        cur.execute(
            """
            INSERT INTO subscription_monetization (user_id, tier, billing_cycle, status,
                base_price_usd, monthly_credit_allocation, current_period_start,
                current_period_end)
            VALUES (%s, %s, 'monthly', 'active', %s, %s, %s, %s)
            RETURNING id
            """,
            (user_id, plan.tier, plan.price_usd, plan.monthly_credits, now, period_end),
        )
        row = cur.fetchone()
        assert row is not None
        subscription_id = UUID(str(row[0]))
        after = before
        if plan.monthly_credits > 0:
            key = f"subscription:{subscription_id}:{now.isoformat()}"
            granted = grant(
                conn,
                Grant(user_id, plan.monthly_credits, "subscription", period_end, key,
                      subscription_id),
            )  # fmt: skip
            after = granted.balance_after
    return Subscribed(subscription_id, plan, now, period_end, before, after)


def upgrade(
    conn: psycopg.Connection[Any], subscription_id: UUID, plan: TierPlan, now: datetime
) -> Upgraded | Refused[Refusal]:
    """Move a subscription to a dearer tier at `now`: proration row, tier, prorated credits."""
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(
            "SELECT user_id FROM subscription_monetization WHERE id = %s", (subscription_id,)
        )
        owner = cur.fetchone()
        if owner is None:
            return Refused(Refusal.UNKNOWN_SUBSCRIPTION, f"no subscription {subscription_id}")
        user_id = UUID(str(owner[0]))
        before = lock_balance(cur, user_id)
        cur.execute(
            """
            SELECT tier::text, status::text, base_price_usd, monthly_credit_allocation,
                   current_period_start, current_period_end
            FROM subscription_monetization WHERE id = %s FOR UPDATE
            """,
            (subscription_id,),
        )
        row = cur.fetchone()
        assert row is not None
        current = Subscription(*row)
        if current.tier == plan.tier:
            done = _upgrade_already_made(cur, subscription_id, current)
            if done is not None:
                return Upgraded(done[0], subscription_id, done[1], before, before, False)
        proration = prorate(current, plan, now)
        if isinstance(proration, Refused):
            return proration
        cur.execute(
            """
            INSERT INTO proration_event (user_id, subscription_id, from_tier, to_tier,
                change_type, days_remaining, days_in_cycle, unused_credit_value_usd,
                new_tier_prorated_cost_usd, net_charge_usd, effective_date, status)
            VALUES (%s, %s, %s, %s, 'upgrade', %s, %s, %s, %s, %s, %s, 'applied')
            RETURNING id
            """,
            (
                user_id, subscription_id, proration.from_tier, proration.to_tier,
                proration.days_remaining, proration.days_in_cycle, proration.unused_value_usd,
                proration.new_cost_usd, proration.net_charge_usd, now,
            ),
        )  # fmt: skip
        event = cur.fetchone()
        assert event is not None
        event_id = UUID(str(event[0]))
        cur.execute(
            """
            UPDATE subscription_monetization
            SET tier = %s, base_price_usd = %s, monthly_credit_allocation = %s, updated_at = now()
            WHERE id = %s
            """,
            (plan.tier, plan.price_usd, plan.monthly_credits, subscription_id),
        )
        after = before
        if proration.credits > 0:
            granted = grant(
                conn,
                Grant(user_id, proration.credits, "subscription", current.period_end,
                      f"proration_event:{event_id}", subscription_id),
            )  # fmt: skip
            after = granted.balance_after
    return Upgraded(event_id, subscription_id, proration, before, after, True)


def _upgrade_already_made(
    cur: psycopg.Cursor[Any], subscription_id: UUID, current: Subscription
) -> tuple[UUID, Proration] | None:
    """The upgrade into the current tier made in this period, if any (a repeated call)."""
    cur.execute(
        """
        SELECT e.id, e.from_tier::text, e.to_tier::text, e.days_remaining, e.days_in_cycle,
               e.unused_credit_value_usd, e.new_tier_prorated_cost_usd, e.net_charge_usd,
               coalesce(a.amount, 0)
        FROM proration_event e
        LEFT JOIN credit_allocation a ON a.idempotency_key = 'proration_event:' || e.id::text
        WHERE e.subscription_id = %s AND e.to_tier = %s AND e.change_type = 'upgrade'
          AND e.effective_date >= %s
        ORDER BY e.effective_date DESC, e.created_at DESC LIMIT 1
        """,
        (subscription_id, current.tier, current.period_start),
    )
    row = cur.fetchone()
    if row is None:
        return None
    return UUID(str(row[0])), Proration(*row[1:])
