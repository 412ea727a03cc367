"""Grow the books to a given number of usage rows, set-based, for the query benchmarks.

`fill_ledgers` tops `token_usage_ledger` up to ``rows`` rows in one transaction, in chunks
of `CHUNK_ROWS`, entirely in SQL (``generate_series`` into temporary tables, then one
``INSERT ... SELECT`` per table; see `ledger_sql`). The shape is realistic: heavy-tailed
users (user ``i`` of ``n`` is drawn with probability ~ i^(-2/3), so the first of 10,000
users sends about 5% of the requests), 60 to 90 days of history per user, the seeded
models of several providers (cache hits and writes included), an occasional failed request.

Each chunk keeps every invariant `reconcile` checks: per user it grants the credits the
chunk will spend plus some headroom (an allocation, a source holding the headroom and a
ledger row), then chains one deduction per request in time order, continuing the user's
balance, and updates the balance row; the user/day, credit/day and model/day summaries get
the fill's sums once at the end. Prices and tier margins come from the seeded tables (a
price must cover the whole history window); costs follow the worker's formula (ceil of
cost x margin / USD per credit), except that ties are rounded half away from zero, not
half-even.
"""

from __future__ import annotations

import secrets
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from pipeline.errors import PipelineError
from pipeline.ops.bench.accounts import ensure_accounts, ensure_coupons
from pipeline.ops.bench.bulk import without_indexes
from pipeline.ops.bench.ledger_sql import CHUNK_STATEMENTS, FINISH_STATEMENTS, SETUP_STATEMENTS
from pipeline.schema.seed import ADMIN_USER_ID, PRICES

Cursor = psycopg.Cursor[Any]

CHUNK_ROWS = 1_000_000
HISTORY_DAYS = 90
BENCH_MODELS = tuple(sorted({p.model_name for p in PRICES}))
LEDGERS = ("token_usage_ledger", "credit_deduction_ledger")
FILLED_TABLES = (
    "users", "subscription_monetization", "user_credit_balance", "user_credit_source",
    "credit_allocation", "coupon", "coupon_usage_limit", "coupon_validation_rule",
    "credit_deduction_ledger", "token_usage_ledger", "token_usage_daily_summary",
    "credit_usage_daily_summary", "model_usage_daily_summary",
)  # fmt: skip


class FillError(PipelineError):
    """The database cannot be filled: not seeded, no price or margin for the window."""


@dataclass(frozen=True, slots=True)
class FillReport:
    """What one `fill_ledgers` call did; JSON-serialisable with `dataclasses.asdict`."""

    rows_before: int
    rows_after: int
    """token_usage_ledger rows before and after."""
    deduction_rows: int
    """credit_deduction_ledger rows after (deductions and grants)."""
    users: int
    bulk: bool
    """Whether the ledgers' indexes and keys were rebuilt after the fill."""
    fill_seconds: float
    """Writing the rows: the one transaction, index rebuilds included."""
    vacuum_seconds: float
    """VACUUM (ANALYZE) of the filled tables afterwards."""


def fill_ledgers(
    conn: psycopg.Connection[Any],
    rows: int,
    users: int,
    seed: int,
    now: datetime,
    *,
    usd_per_credit: Decimal = Decimal("0.001"),
) -> FillReport:
    """Top the ledgers up to ``rows`` usage rows of ``users`` bench users, then VACUUM ANALYZE.

    ``now`` ends the history window; ``seed`` makes the shape reproducible (ids are random).
    A ``rows`` at or below the current count adds no ledger rows but still makes sure the
    users, subscriptions, balances and coupons exist. Everything is written in one
    transaction; when it at least doubles the ledgers, their indexes and keys are rebuilt
    afterwards instead of maintained row by row (`bulk.without_indexes`). The connection
    must be idle; its autocommit mode is restored.
    """
    if rows < 0 or users < 1:
        raise FillError(f"need rows >= 0 and users >= 1, got rows={rows}, users={users}")
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise FillError("the connection has an open transaction; commit or roll it back")
    autocommit = conn.autocommit
    conn.autocommit = True
    try:
        started = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur:
            # Bigger sorts and index builds in memory; no flush wait at commit.
            cur.execute("SET LOCAL work_mem = '1GB'")
            cur.execute("SET LOCAL maintenance_work_mem = '1GB'")
            cur.execute("SET LOCAL synchronous_commit = off")
            cur.execute("SELECT FROM users WHERE id = %s", (ADMIN_USER_ID,))
            if cur.fetchone() is None:
                raise FillError("the reference data is missing: run `usage-pipeline db seed` first")
            ensure_accounts(cur, users, now)
            ensure_coupons(cur, now)
            rows_before = _count(cur, "token_usage_ledger")
            bulk = rows - rows_before >= max(rows_before, 1)
            if rows > rows_before:
                with without_indexes(cur, LEDGERS) if bulk else nullcontext():
                    _fill(cur, rows_before, rows, users, seed, now, usd_per_credit)
        fill_seconds = time.perf_counter() - started
        started = time.perf_counter()
        for table in FILLED_TABLES:
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(table)))
        vacuum_seconds = time.perf_counter() - started
        with conn.cursor() as cur:
            return FillReport(
                rows_before=rows_before,
                rows_after=_count(cur, "token_usage_ledger"),
                deduction_rows=_count(cur, "credit_deduction_ledger"),
                users=users,
                bulk=bulk,
                fill_seconds=round(fill_seconds, 3),
                vacuum_seconds=round(vacuum_seconds, 3),
            )
    finally:
        conn.autocommit = autocommit


def _fill(
    cur: Cursor,
    rows_before: int,
    rows: int,
    users: int,
    seed: int,
    now: datetime,
    usd_per_credit: Decimal,
) -> None:
    """The ledger rows from ``rows_before`` up to ``rows``, chunk by chunk, then summaries."""
    since = now - timedelta(days=HISTORY_DAYS + 1)
    params: dict[str, Any] = {
        "users": users,
        "now": now,
        "since": since,
        "models": list(BENCH_MODELS),
        "usd_per_credit": usd_per_credit,
        "salt": secrets.token_hex(8),
    }
    for statement in SETUP_STATEMENTS:
        cur.execute(statement)
    done = rows_before
    while done < rows:
        params["first"] = done
        params["count"] = min(CHUNK_ROWS, rows - done)
        cur.execute("SELECT setseed(%s)", ((seed + done) % 2_000_003 / 2_000_003,))
        for name, statement in CHUNK_STATEMENTS:
            cur.execute(statement, params)
            if name == "models":
                params["model_count"] = _require(
                    cur, "bench_models",
                    f"no seeded price of {', '.join(BENCH_MODELS)} covers {since} to {now}",
                )  # fmt: skip
            elif name == "accounts":
                found = _count(cur, "bench_accounts")
                if found != users:
                    raise FillError(
                        f"only {found} of {users} bench users have an active subscription with "
                        f"an approved margin for its tier; run `usage-pipeline db seed` first"
                    )
            elif name == "base_seq":
                row = cur.fetchone()
                assert row is not None
                params["base_seq"] = int(row[0])
        done += params["count"]
    for statement in FINISH_STATEMENTS:
        cur.execute(statement, params)


def _count(cur: Cursor, table: str) -> int:
    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
    row = cur.fetchone()
    assert row is not None
    return int(row[0])


def _require(cur: Cursor, table: str, message: str) -> int:
    found = _count(cur, table)
    if not found:
        raise FillError(message + "; run `usage-pipeline db seed` first")
    return found
