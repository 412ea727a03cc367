"""The demo's data and report: demo users with subscriptions and grants, per-user totals."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg

from pipeline.money.credits import Grant, grant
from pipeline.ops.demo.sample import DemoUser

Conn = psycopg.Connection[Any]


def setup_users(
    conn: psycopg.Connection[tuple[object, ...]], users: tuple[DemoUser, ...], now: datetime
) -> None:
    """Create the demo users, subscriptions, licenses and grants; safe to run twice."""
    with conn.transaction(), conn.cursor() as cur:
        for user in users:
            cur.execute(
                "INSERT INTO users (id, email) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING",
                (user.id, user.email),
            )
            if user.byok:
                cur.execute(
                    """
                    INSERT INTO perpetual_license (
                        user_id, license_key, purchase_price_usd, purchased_version,
                        eligible_until_version, max_activations, status, byok_enabled)
                    VALUES (%s, %s, 199.00, '1.0.0', '1.99.99', 3, 'active', true)
                    ON CONFLICT (license_key) DO NOTHING
                    """,
                    (user.id, f"DEMO-{user.id}"),
                )
            elif user.tier is not None:
                cur.execute(
                    """
                    INSERT INTO subscription_monetization (
                        id, user_id, tier, billing_cycle, status, base_price_usd,
                        monthly_credit_allocation, current_period_start, current_period_end)
                    VALUES (%s, %s, %s, 'monthly', 'active', 19.00, %s, %s, %s)
                    ON CONFLICT (id) DO NOTHING
                    """,
                    (user.id, user.id, user.tier, user.credits,
                     now - timedelta(days=15), now + timedelta(days=15)),
                )  # fmt: skip
    for user in users:
        if user.credits:
            grant(
                conn,
                Grant(
                    user.id,
                    user.credits,
                    "subscription" if user.tier else "bonus",
                    idempotency_key=f"demo-{user.id}",
                ),
            )


@dataclass(frozen=True, slots=True)
class UserTotals:
    email: str
    requests: int
    tokens: int
    vendor_cost: Decimal
    credits: int
    balance: int


def user_totals(conn: Conn, ids: list[UUID]) -> list[UserTotals]:
    rows = conn.execute(
        """
        SELECT u.email, count(l.id), coalesce(sum(l.total_tokens), 0),
               coalesce(sum(l.vendor_cost), 0), coalesce(sum(l.credits_deducted), 0),
               coalesce(b.amount, 0)
        FROM users u
        LEFT JOIN token_usage_ledger l ON l.user_id = u.id
        LEFT JOIN user_credit_balance b ON b.user_id = u.id
        WHERE u.id = ANY(%s)
        GROUP BY u.email, b.amount ORDER BY u.email
        """,
        (ids,),
    ).fetchall()
    return [UserTotals(*r) for r in rows]
