"""Reconciliation: prove the books' invariants (DESIGN.md) with plain SQL over the ledgers.

Each check is one set-based query returning the rows that break it, so a nightly run over
millions of ledger rows costs a few sequential scans, not a loop per user.

A reversed deduction (`movements.reverse`) stays in the ledger and keeps matching its usage
row, but its credits are refunded: the summaries' credit columns leave it out, and so do
the ledger sums they are checked against.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any
from uuid import UUID

import psycopg


@dataclass(frozen=True, slots=True)
class Violation:
    check: str
    user_id: UUID | None
    day: date | None
    expected: str
    actual: str

    def __str__(self) -> str:
        where = " ".join(
            x for x in (f"user {self.user_id}" if self.user_id else "",
                        f"day {self.day}" if self.day else "") if x
        )  # fmt: skip
        return f"{self.check}: {where}: expected {self.expected}, found {self.actual}"


# (check name, SQL returning user_id, day, expected, actual); %(user)s filters one user.
CHECKS: tuple[tuple[str, str], ...] = (
    (
        "one_usage_row_per_request",
        """
        SELECT min(user_id::text)::uuid, NULL::date, '1', count(*)::text
        FROM token_usage_ledger WHERE %(user)s::uuid IS NULL OR user_id = %(user)s
        GROUP BY request_id HAVING count(*) > 1
        """,
    ),
    (
        "one_deduction_per_request",
        """
        SELECT min(user_id::text)::uuid, NULL::date, '1', count(*)::text
        FROM credit_deduction_ledger
        WHERE request_id IS NOT NULL AND (%(user)s::uuid IS NULL OR user_id = %(user)s)
        GROUP BY request_id HAVING count(*) > 1
        """,
    ),
    (
        "usage_matches_its_deduction",
        """
        SELECT u.user_id, (u.request_started_at AT TIME ZONE 'UTC')::date,
               u.credits_deducted::text, coalesce(-d.amount, 0)::text
        FROM token_usage_ledger u
        LEFT JOIN credit_deduction_ledger d ON d.id = u.deduction_record_id
        WHERE (%(user)s::uuid IS NULL OR u.user_id = %(user)s)
          AND u.credits_deducted <> coalesce(-d.amount, 0)
        """,
    ),
    (
        "balance_chain",
        """
        SELECT user_id, NULL::date, coalesce(prev_after, 0)::text, balance_before::text
        FROM (
            SELECT user_id, balance_before,
                   lag(balance_after) OVER (PARTITION BY user_id ORDER BY seq) AS prev_after
            FROM credit_deduction_ledger
            WHERE %(user)s::uuid IS NULL OR user_id = %(user)s
        ) chain
        WHERE balance_before <> coalesce(prev_after, 0)
        """,
    ),
    (
        "balance_equals_ledger_sum",
        """
        SELECT b.user_id, NULL::date, coalesce(l.total, 0)::text, b.amount::text
        FROM user_credit_balance b
        LEFT JOIN (SELECT user_id, sum(amount) AS total FROM credit_deduction_ledger
                   GROUP BY user_id) l ON l.user_id = b.user_id
        WHERE (%(user)s::uuid IS NULL OR b.user_id = %(user)s)
          AND b.amount <> coalesce(l.total, 0)
        """,
    ),
    (
        "sources_not_negative",
        """
        SELECT user_id, NULL::date, '>= 0', amount::text FROM user_credit_source
        WHERE amount < 0 AND (%(user)s::uuid IS NULL OR user_id = %(user)s)
        """,
    ),
    (
        "token_summary_equals_ledger",
        """
        WITH ledger AS (
            SELECT u.user_id, (u.request_started_at AT TIME ZONE 'UTC')::date AS day,
                   count(*) AS requests, sum(u.input_tokens) AS input,
                   sum(u.output_tokens) AS output, sum(u.vendor_cost) AS cost,
                   coalesce(sum(u.credits_deducted)
                            FILTER (WHERE d.status IS DISTINCT FROM 'reversed'), 0) AS credits,
                   sum(u.gross_margin_usd) AS margin
            FROM token_usage_ledger u
            LEFT JOIN credit_deduction_ledger d ON d.id = u.deduction_record_id
            WHERE %(user)s::uuid IS NULL OR u.user_id = %(user)s
            GROUP BY 1, 2
        ), summary AS (
            SELECT user_id, summary_date AS day, total_requests AS requests,
                   total_input_tokens AS input, total_output_tokens AS output,
                   total_vendor_cost AS cost, total_credits_deducted AS credits,
                   total_gross_margin AS margin
            FROM token_usage_daily_summary WHERE %(user)s::uuid IS NULL OR user_id = %(user)s
        )
        SELECT coalesce(l.user_id, s.user_id), coalesce(l.day, s.day),
               row(l.requests, l.input, l.output, l.cost, l.credits, l.margin)::text,
               row(s.requests, s.input, s.output, s.cost, s.credits, s.margin)::text
        FROM ledger l FULL JOIN summary s ON s.user_id = l.user_id AND s.day = l.day
        WHERE row(l.requests, l.input, l.output, l.cost, l.credits, l.margin)
              IS DISTINCT FROM row(s.requests, s.input, s.output, s.cost, s.credits, s.margin)
        """,
    ),
    (
        "credit_summary_equals_ledger",
        """
        WITH ledger AS (
            SELECT u.user_id, (u.request_started_at AT TIME ZONE 'UTC')::date AS day,
                   coalesce(sum(-d.amount) FILTER (WHERE d.status <> 'reversed'), 0) AS credits,
                   count(*) AS requests,
                   sum(u.vendor_cost) AS cost, sum(u.gross_margin_usd) AS margin
            FROM token_usage_ledger u JOIN credit_deduction_ledger d ON d.id = u.deduction_record_id
            WHERE %(user)s::uuid IS NULL OR u.user_id = %(user)s
            GROUP BY 1, 2
        ), summary AS (
            SELECT user_id, summary_date AS day, total_deductions AS credits,
                   total_requests AS requests, total_vendor_cost AS cost,
                   total_gross_margin AS margin
            FROM credit_usage_daily_summary WHERE %(user)s::uuid IS NULL OR user_id = %(user)s
        )
        SELECT coalesce(l.user_id, s.user_id), coalesce(l.day, s.day),
               row(l.credits, l.requests, l.cost, l.margin)::text,
               row(s.credits, s.requests, s.cost, s.margin)::text
        FROM ledger l FULL JOIN summary s ON s.user_id = l.user_id AND s.day = l.day
        WHERE row(l.credits, l.requests, l.cost, l.margin)
              IS DISTINCT FROM row(s.credits, s.requests, s.cost, s.margin)
        """,
    ),
)


def reconcile(conn: psycopg.Connection[Any], user: UUID | None = None) -> list[Violation]:
    """Every invariant violation in the books (of one user, if given)."""
    violations: list[Violation] = []
    with conn.cursor() as cur:
        for name, query in CHECKS:
            cur.execute(query, {"user": user})
            violations.extend(Violation(name, *row) for row in cur.fetchall())
    return violations
