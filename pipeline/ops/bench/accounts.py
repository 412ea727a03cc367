"""The reference rows a ledger benchmark needs: users, subscriptions, balances and coupons.

Bench user ``i`` has the fixed id ``md5('bench-user:' || i)::uuid``, so a later, larger fill
finds the users an earlier one made. Every user gets one active annual subscription that
covers the whole history (the tier is ``i mod 20``: mostly pro, a few free, pro_max and
enterprise); every fifth user also has an older, cancelled one, so "the user's subscription"
has to pick. Coupons are many enough (``COUPONS``) that looking one up by code is a real
index lookup, each with its limits row and three validation rules, one of them inactive.
Everything is inserted set-based and only where missing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from pipeline.schema.seed import ADMIN_USER_ID

Cursor = psycopg.Cursor[Any]

COUPONS = 5_000
COUPON_PREFIX = "BENCH"


def create_user_table(cur: Cursor, users: int) -> None:
    """The temporary table ``bench_users (u, id)`` of bench users 0..users-1, until commit."""
    cur.execute(
        """
        CREATE TEMP TABLE bench_users ON COMMIT DROP AS
        SELECT i AS u, md5('bench-user:' || i)::uuid AS id FROM generate_series(0, %s - 1) i
        """,
        (users,),
    )


def ensure_accounts(cur: Cursor, users: int, now: datetime) -> None:
    """Create the missing bench users 0..users-1 with subscriptions and balance rows."""
    create_user_table(cur, users)
    params = {"now": now}
    cur.execute(
        """
        INSERT INTO users (id, email, created_at, updated_at)
        SELECT id, 'bench-user-' || u || '@bench.usage-pipeline.local',
               %(now)s - interval '400 days', %(now)s - interval '400 days'
        FROM bench_users
        ON CONFLICT (id) DO NOTHING
        """,
        params,
    )
    cur.execute(
        """
        INSERT INTO subscription_monetization (
            user_id, tier, billing_cycle, status, base_price_usd, monthly_credit_allocation,
            current_period_start, current_period_end, created_at, updated_at)
        SELECT b.id, t.tier::subscription_tier, 'annual', 'active', t.price, t.credits,
               %(now)s - interval '120 days', %(now)s + interval '245 days',
               %(now)s - interval '120 days', %(now)s - interval '120 days'
        FROM bench_users b
        JOIN (VALUES (0, 2, 'free', 0, 1000), (3, 12, 'pro', 20, 20000),
                     (13, 16, 'pro_max', 50, 60000), (17, 18, 'enterprise_pro', 150, 250000),
                     (19, 19, 'enterprise_max', 300, 600000))
            AS t(low, high, tier, price, credits) ON b.u %% 20 BETWEEN t.low AND t.high
        WHERE NOT EXISTS (
            SELECT FROM subscription_monetization s WHERE s.user_id = b.id AND s.status = 'active')
        """,
        params,
    )
    cur.execute(
        """
        INSERT INTO subscription_monetization (
            user_id, tier, billing_cycle, status, base_price_usd, monthly_credit_allocation,
            current_period_start, current_period_end, cancelled_at, created_at, updated_at)
        SELECT b.id, 'pro', 'annual', 'cancelled', 20, 20000,
               %(now)s - interval '485 days', %(now)s - interval '120 days',
               %(now)s - interval '121 days', %(now)s - interval '485 days',
               %(now)s - interval '121 days'
        FROM bench_users b
        WHERE b.u %% 5 = 0 AND NOT EXISTS (
            SELECT FROM subscription_monetization s
            WHERE s.user_id = b.id AND s.status = 'cancelled')
        """,
        params,
    )
    cur.execute(
        """
        INSERT INTO user_credit_balance (user_id, amount, created_at, updated_at)
        SELECT id, 0, %(now)s - interval '120 days', %(now)s - interval '120 days'
        FROM bench_users ORDER BY id
        ON CONFLICT (user_id) DO NOTHING
        """,
        params,
    )


def ensure_coupons(cur: Cursor, now: datetime) -> None:
    """Create the missing bench coupons with their limits and validation rules."""
    params = {"count": COUPONS, "prefix": COUPON_PREFIX, "admin": ADMIN_USER_ID, "now": now}
    cur.execute(
        """
        INSERT INTO coupon (
            code, coupon_type, discount_value, discount_type, description, valid_from,
            valid_until, is_active, created_by, created_at, updated_at)
        SELECT %(prefix)s || lpad(i::text, 5, '0'),
               (ARRAY['percentage_discount', 'fixed_amount', 'credit_bonus', 'byok_license'])
                   [1 + i %% 4],
               5 + i %% 46, CASE WHEN i %% 4 = 0 THEN 'percentage' ELSE 'fixed' END,
               'benchmark coupon ' || i, %(now)s - interval '200 days',
               CASE WHEN i %% 3 = 0 THEN NULL ELSE %(now)s + interval '60 days' END,
               i %% 10 <> 0, %(admin)s, %(now)s - interval '200 days', %(now)s - interval '200 days'
        FROM generate_series(0, %(count)s - 1) i
        ON CONFLICT (code) DO NOTHING
        """,
        params,
    )
    cur.execute(
        """
        INSERT INTO coupon_usage_limit (coupon_id, max_total_uses, max_uses_per_user)
        SELECT id, 1000, 1 FROM coupon WHERE code LIKE %(prefix)s || '%%'
        ON CONFLICT (coupon_id) DO NOTHING
        """,
        params,
    )
    cur.execute(
        """
        INSERT INTO coupon_validation_rule (coupon_id, rule_type, rule_value, is_active)
        SELECT c.id, r.rule_type, r.rule_value::jsonb, r.is_active
        FROM coupon c
        CROSS JOIN (VALUES ('min_purchase_usd', '{"amount": 10}', true),
                           ('eligible_tiers', '{"tiers": ["pro", "pro_max"]}', true),
                           ('first_purchase_only', '{"value": true}', false))
            AS r(rule_type, rule_value, is_active)
        WHERE c.code LIKE %(prefix)s || '%%'
          AND NOT EXISTS (SELECT FROM coupon_validation_rule v WHERE v.coupon_id = c.id)
        """,
        params,
    )
