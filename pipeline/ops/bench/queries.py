"""The seed's four query benchmarks (Task 2.4) in plain SQL, timed, with their plans.

The seed's Prisma queries, translated (Prisma runs one query per `include`; here each
benchmark is one statement, the includes as correlated subqueries):

- balance lookup: ``userCreditBalance.findUnique({userId})``;
- 30-day history: ``tokenUsageLedger.findMany({userId, createdAt >= now - 30 days},
  orderBy createdAt desc)``;
- coupon validation: ``coupon.findUnique({code})`` with its usage limits and active
  validation rules;
- subscription + credit usage: ``subscriptionMonetization.findFirst({userId})`` with the
  subscription's credit allocations and the user with the credit balance; "first" is the
  subscription with the latest period end (the seed leaves the order open).

Each run draws a random existing user (or coupon code) per repetition and times the
statement from the client, rows fetched included, as the seed's script did.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, LiteralString

import psycopg

from pipeline.errors import PipelineError
from pipeline.money.reconcile import reconcile


class BenchQueryError(PipelineError):
    """The database has nothing to query, or its books do not reconcile."""


@dataclass(frozen=True, slots=True)
class QueryResult:
    """One benchmark; JSON-serialisable with `dataclasses.asdict`."""

    name: str
    median_ms: float
    p95_ms: float
    rows: int
    """Rows returned per execution, median over the repetitions."""
    indexes: tuple[str, ...]
    """Indexes the plan uses (for the first drawn parameter), in plan order."""
    plan: str
    """``EXPLAIN (ANALYZE, BUFFERS)`` of the first drawn parameter."""


@dataclass(frozen=True, slots=True)
class SeedQuery:
    name: str
    sql: LiteralString
    parameters: LiteralString
    """Query returning the candidate parameter values (one column)."""


QUERIES = (
    SeedQuery(
        "balance lookup",
        "SELECT * FROM user_credit_balance WHERE user_id = %s",
        "SELECT user_id FROM user_credit_balance ORDER BY user_id",
    ),
    SeedQuery(
        "30-day history",
        """
        SELECT * FROM token_usage_ledger
        WHERE user_id = %s AND created_at >= now() - interval '30 days'
        ORDER BY created_at DESC
        """,
        "SELECT user_id FROM user_credit_balance ORDER BY user_id",
    ),
    SeedQuery(
        "coupon validation",
        """
        SELECT c.*, to_jsonb(l) AS usage_limit,
               (SELECT coalesce(jsonb_agg(to_jsonb(r)), '[]') FROM coupon_validation_rule r
                WHERE r.coupon_id = c.id AND r.is_active) AS validation_rules
        FROM coupon c LEFT JOIN coupon_usage_limit l ON l.coupon_id = c.id
        WHERE c.code = %s
        """,
        "SELECT code FROM coupon ORDER BY code",
    ),
    SeedQuery(
        "subscription + credit usage",
        """
        SELECT s.*,
               (SELECT coalesce(jsonb_agg(to_jsonb(a)), '[]') FROM credit_allocation a
                WHERE a.subscription_id = s.id) AS credit_allocations,
               to_jsonb(u) AS user, to_jsonb(b) AS credit_balance
        FROM subscription_monetization s
        JOIN users u ON u.id = s.user_id
        LEFT JOIN user_credit_balance b ON b.user_id = s.user_id
        WHERE s.user_id = %s
        ORDER BY s.current_period_end DESC
        LIMIT 1
        """,
        "SELECT DISTINCT user_id FROM subscription_monetization ORDER BY user_id",
    ),
)


def run_queries(
    conn: psycopg.Connection[Any], repeats: int = 50, seed: int = 0
) -> list[QueryResult]:
    """Each seed query ``repeats`` times for random existing parameters, with its plan."""
    if repeats < 1:
        raise BenchQueryError(f"repeats must be at least 1, not {repeats}")
    rng = random.Random(seed)
    results = []
    for query in QUERIES:
        candidates = [row[0] for row in conn.execute(query.parameters).fetchall()]
        if not candidates:
            raise BenchQueryError(f"nothing to run {query.name!r} for: fill the database first")
        drawn = [rng.choice(candidates) for _ in range(repeats)]
        timings: list[float] = []
        counts: list[int] = []
        for value in drawn:
            started = time.perf_counter()
            counts.append(len(conn.execute(query.sql, (value,)).fetchall()))
            timings.append((time.perf_counter() - started) * 1000)
        conn.rollback()
        results.append(
            QueryResult(
                name=query.name,
                median_ms=round(statistics.median(timings), 3),
                p95_ms=round(percentile(timings, 95), 3),
                rows=int(statistics.median_low(counts)),
                indexes=plan_indexes(conn, query.sql, drawn[0]),
                plan=explain(conn, query.sql, drawn[0]),
            )
        )
    return results


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


def explain(conn: psycopg.Connection[Any], query: LiteralString, value: Any) -> str:
    rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + query, (value,)).fetchall()
    conn.rollback()
    return "\n".join(str(row[0]) for row in rows)


def plan_indexes(
    conn: psycopg.Connection[Any], query: LiteralString, value: Any
) -> tuple[str, ...]:
    row = conn.execute("EXPLAIN (FORMAT JSON) " + query, (value,)).fetchone()
    conn.rollback()
    assert row is not None
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
    names = [node["Index Name"] for node in _nodes(plan[0]["Plan"]) if "Index Name" in node]
    return tuple(dict.fromkeys(names))


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)


def time_reconcile(conn: psycopg.Connection[Any]) -> float:
    """Seconds `reconcile` takes over the whole database; an error if the books are off."""
    started = time.perf_counter()
    violations = reconcile(conn)
    elapsed = time.perf_counter() - started
    conn.rollback()
    if violations:
        raise BenchQueryError(
            f"reconcile found {len(violations)} violations, the first: {violations[0]}"
        )
    return round(elapsed, 3)
