"""Balance changes other than usage and grants: expiring credits and reversing a deduction.

Both lock the user's `user_credit_balance` row first (`credits.lock_balance`, the lock
every money movement takes) and append a `credit_deduction_ledger` row with the balance
before and after, so the balance chain stays exact and the balance stays the ledger sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg

from pipeline.errors import PipelineError
from pipeline.money.credits import lock_balance, record_change, spendable_part

Cursor = psycopg.Cursor[Any]


class MovementError(PipelineError):
    """A reversal the books cannot take: no such deduction, unknown admin."""


@dataclass(frozen=True, slots=True)
class ReverseResult:
    request_id: UUID
    user_id: UUID
    credits_refunded: int
    balance_before: int
    balance_after: int
    applied: bool
    """False when the deduction had been reversed already (nothing changed)."""


def expire(conn: psycopg.Connection[Any], now: datetime) -> int:
    """Zero every source expired at `now`; returns the credits expired.

    One transaction per user, users in id order (the balance lock order), so a crash
    leaves every user either fully expired or untouched and a rerun finishes the rest. Runs
    may overlap (every worker runs it): a run that waited for a user's balance lock finds
    the sources the other run zeroed no longer `amount > 0`, so each expires once.
    """
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            """
            SELECT DISTINCT user_id FROM user_credit_source
            WHERE amount > 0 AND expires_at <= %s ORDER BY user_id
            """,
            (now,),
        )
        users = [UUID(str(r[0])) for r in cur.fetchall()]
    total = 0
    for user_id in users:
        with conn.transaction(), conn.cursor() as cur:
            before = lock_balance(cur, user_id)
            cur.execute(
                """
                WITH expired AS (
                    SELECT id, amount FROM user_credit_source
                    WHERE user_id = %s AND amount > 0 AND expires_at <= %s
                    FOR UPDATE
                ), zeroed AS (
                    UPDATE user_credit_source s SET amount = 0 FROM expired e WHERE s.id = e.id
                )
                SELECT coalesce(sum(amount), 0) FROM expired
                """,
                (user_id, now),
            )
            row = cur.fetchone()
            expired = int(row[0]) if row else 0
            if expired:
                record_change(cur, user_id, before, -expired, "expiration")
                total += expired
    return total


def reverse(
    conn: psycopg.Connection[Any], request_id: UUID, reason: str, by: UUID
) -> ReverseResult:
    """Refund the deduction of `request_id` once; a second call changes nothing.

    Marks the deduction reversed (the only update the ledger allows), appends a refund
    row, credits the balance (the part not repaying an overdraft comes back as a source
    that never expires) and takes the refund out of the request's day in the summaries.
    """
    if not reason.strip():
        raise MovementError("a reversal needs a reason")
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "SELECT user_id FROM credit_deduction_ledger WHERE request_id = %s", (request_id,)
        )
        found = cur.fetchone()
        if found is None:
            raise MovementError(f"no deduction for request {request_id}")
        user_id = UUID(str(found[0]))
        before = lock_balance(cur, user_id)
        cur.execute(
            """
            SELECT d.id, d.amount, d.reversed_at, u.request_started_at, u.model_id, u.provider_id
            FROM credit_deduction_ledger d
            LEFT JOIN token_usage_ledger u ON u.deduction_record_id = d.id
            WHERE d.request_id = %s FOR UPDATE OF d
            """,
            (request_id,),
        )
        row = cur.fetchone()
        assert row is not None
        deduction_id, amount, reversed_at, started_at, model_id, provider_id = row
        if reversed_at is not None:
            return ReverseResult(request_id, user_id, 0, before, before, applied=False)
        refund = -int(amount)
        if refund <= 0 or started_at is None:
            raise MovementError(f"request {request_id} has no deduction of credits to reverse")
        cur.execute("SELECT 1 FROM users WHERE id = %s", (by,))
        if cur.fetchone() is None:
            raise MovementError(f"no user {by} to reverse with")
        cur.execute(
            """
            UPDATE credit_deduction_ledger
            SET status = 'reversed', reversed_at = now(), reversed_by = %s, reversal_reason = %s
            WHERE id = %s
            """,
            (by, reason, deduction_id),
        )
        after = record_change(cur, user_id, before, refund, "reversal")
        spendable = spendable_part(before, refund)
        if spendable:
            cur.execute(
                "INSERT INTO user_credit_source (user_id, source, amount) "
                "VALUES (%s, 'reversal', %s)",
                (user_id, spendable),
            )
        _unbook_credits(cur, user_id, started_at, provider_id, model_id, refund)
    return ReverseResult(request_id, user_id, refund, before, after, applied=True)


def _unbook_credits(
    cur: Cursor, user_id: UUID, started_at: datetime, provider_id: UUID, model_id: str, credits: int
) -> None:
    """Take refunded credits out of the summaries of the request's UTC day."""
    params = {
        "user": user_id, "at": started_at, "credits": credits,
        "provider": provider_id, "model": model_id,
    }  # fmt: skip
    cur.execute(
        """
        UPDATE credit_usage_daily_summary SET total_deductions = total_deductions - %(credits)s
        WHERE user_id = %(user)s
          AND summary_date = (%(at)s::timestamptz AT TIME ZONE 'UTC')::date
        """,
        params,
    )
    cur.execute(
        """
        UPDATE token_usage_daily_summary
        SET total_credits_deducted = total_credits_deducted - %(credits)s
        WHERE user_id = %(user)s
          AND summary_date = (%(at)s::timestamptz AT TIME ZONE 'UTC')::date
        """,
        params,
    )
    cur.execute(
        """
        UPDATE model_usage_daily_summary
        SET total_credits_deducted = total_credits_deducted - %(credits)s, updated_at = now()
        WHERE provider_id = %(provider)s AND model_id = %(model)s
          AND summary_date = (%(at)s::timestamptz AT TIME ZONE 'UTC')::date
        """,
        params,
    )
