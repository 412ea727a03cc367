"""Credit grants: allocation, source and balance change written together, idempotently.

Every money movement locks the user's `user_credit_balance` row first (the same lock the
usage batches take, in the same order), so grants and deductions serialize per user and
the `balance_before`/`balance_after` chain stays exact. A grant to a user in overdraft
pays the debt first: only the rest becomes a spendable (and expirable) source.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg

CREDIT_TYPES = ("subscription", "bonus", "referral", "coupon", "admin_grant")


@dataclass(frozen=True, slots=True)
class Grant:
    user_id: UUID
    amount: int
    credit_type: str
    expires_at: datetime | None = None
    idempotency_key: str | None = None
    subscription_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class GrantResult:
    allocation_id: UUID
    balance_before: int
    balance_after: int
    applied: bool
    """False when the idempotency key had been used already (nothing changed)."""


def spendable_part(balance_before: int, amount: int) -> int:
    """What a grant adds to the sources after repaying an overdraft."""
    return max(0, amount - max(0, -balance_before))


def lock_balance(cur: psycopg.Cursor[Any], user_id: UUID) -> int:
    cur.execute(
        "INSERT INTO user_credit_balance (user_id, amount) VALUES (%s, 0) "
        "ON CONFLICT (user_id) DO NOTHING",
        (user_id,),
    )
    cur.execute("SELECT amount FROM user_credit_balance WHERE user_id = %s FOR UPDATE", (user_id,))
    row = cur.fetchone()
    assert row is not None
    return int(row[0])


def record_change(
    cur: psycopg.Cursor[Any], user_id: UUID, before: int, amount: int, reason: str
) -> int:
    """Append a balance change to the ledger and set the locked balance; returns it."""
    after = before + amount
    cur.execute(
        """
        INSERT INTO credit_deduction_ledger (
            user_id, amount, balance_before, balance_after, reason, status)
        VALUES (%s, %s, %s, %s, %s, 'completed')
        """,
        (user_id, amount, before, after, reason),
    )
    cur.execute(
        "UPDATE user_credit_balance SET amount = %s, updated_at = now() WHERE user_id = %s",
        (after, user_id),
    )
    return after


def grant(conn: psycopg.Connection[Any], g: Grant) -> GrantResult:
    """Grant credits in one transaction; a repeated idempotency key changes nothing."""
    if g.amount <= 0:
        raise ValueError("a grant must be a positive number of credits")
    if g.credit_type not in CREDIT_TYPES:
        raise ValueError(f"credit type must be one of {', '.join(CREDIT_TYPES)}")
    with conn.transaction(), conn.cursor() as cur:
        before = lock_balance(cur, g.user_id)
        if g.idempotency_key is not None:
            cur.execute(
                "SELECT id FROM credit_allocation WHERE idempotency_key = %s",
                (g.idempotency_key,),
            )
            found = cur.fetchone()
            if found is not None:
                return GrantResult(UUID(str(found[0])), before, before, applied=False)
        cur.execute(
            """
            INSERT INTO credit_allocation (
                user_id, subscription_id, amount, source, allocation_period_start,
                allocation_period_end, expires_at, applied_to_balance_at, credit_type,
                idempotency_key)
            VALUES (%s, %s, %s, %s, now(), coalesce(%s, 'infinity'::timestamptz), %s, now(), %s, %s)
            RETURNING id
            """,
            (
                g.user_id, g.subscription_id, g.amount, g.credit_type, g.expires_at,
                g.expires_at, g.credit_type, g.idempotency_key,
            ),
        )  # fmt: skip
        row = cur.fetchone()
        assert row is not None
        allocation_id = UUID(str(row[0]))
        spendable = spendable_part(before, g.amount)
        if spendable:
            cur.execute(
                "INSERT INTO user_credit_source (user_id, source, amount, expires_at) "
                "VALUES (%s, %s, %s, %s)",
                (g.user_id, g.credit_type, spendable, g.expires_at),
            )
        after = record_change(cur, g.user_id, before, g.amount, f"grant_{g.credit_type}")
    return GrantResult(allocation_id, before, after, applied=True)
