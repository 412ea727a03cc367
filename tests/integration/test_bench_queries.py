"""The ledger filler and the seed query benchmarks, against a real PostgreSQL."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from pipeline.cli.bench_query_commands import queries
from pipeline.money.reconcile import reconcile
from pipeline.ops.bench.ledger_fill import FillError, fill_ledgers
from pipeline.ops.bench.queries import QUERIES, BenchQueryError, run_queries, time_reconcile

pytestmark = [pytest.mark.integration, pytest.mark.drill]

NOW = datetime.now(UTC)
USERS = 2_000
# The index each seed query must look its rows up by.
EXPECTED_INDEXES = {
    "balance lookup": "user_credit_balance_user_id_key",
    "30-day history": "token_usage_ledger_user_id_created_at_idx",
    "coupon validation": "coupon_code_key",
    "subscription + credit usage": "idx_subscription_user_period_status",
}


def count(conn: psycopg.Connection, table: str) -> int:
    query = psycopg.sql.SQL("SELECT count(*) FROM {}").format(psycopg.sql.Identifier(table))
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def test_fill_is_exact_reconciles_and_tops_up(seeded_db: str) -> None:
    with psycopg.connect(seeded_db) as conn:
        first = fill_ledgers(conn, 20_000, USERS, seed=7, now=NOW)
        assert (first.rows_before, first.rows_after, first.bulk) == (0, 20_000, True)
        assert reconcile(conn) == []
        assert count(conn, "credit_deduction_ledger") == first.deduction_rows > 20_000
        conn.rollback()

        # A top-up below the doubling threshold maintains the indexes row by row.
        second = fill_ledgers(conn, 25_000, USERS, seed=8, now=NOW)
        assert (second.rows_before, second.rows_after, second.bulk) == (20_000, 25_000, False)
        assert reconcile(conn) == []
        conn.rollback()
        # Asking for fewer rows than there are adds nothing.
        third = fill_ledgers(conn, 10_000, USERS, seed=9, now=NOW)
        assert third.rows_after == 25_000 and third.deduction_rows == second.deduction_rows
        assert json.loads(json.dumps(asdict(third)))["rows_after"] == 25_000

        assert count(conn, "users") == USERS + 1  # and the seeded admin
        heaviest = conn.execute(
            "SELECT count(*) FROM token_usage_ledger GROUP BY user_id ORDER BY 1 DESC LIMIT 1"
        ).fetchone()
        assert heaviest is not None and heaviest[0] > 25_000 / USERS * 20  # heavy-tailed
        days = conn.execute(
            "SELECT max(created_at) - min(created_at) FROM token_usage_ledger"
        ).fetchone()
        assert days is not None and 59 <= days[0].days <= 90
        models = conn.execute("SELECT count(DISTINCT model_id) FROM token_usage_ledger").fetchone()
        assert models is not None and models[0] == 4
        # The bulk fill restored every index and key it took off.
        indexes = conn.execute(
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'token_usage_ledger'"
        ).fetchone()
        assert indexes is not None and indexes[0] == 9


def test_every_seed_query_uses_its_index(seeded_db: str) -> None:
    with psycopg.connect(seeded_db) as conn:
        fill_ledgers(conn, 20_000, USERS, seed=1, now=NOW)
        results = run_queries(conn, repeats=5)
        assert [r.name for r in results] == [q.name for q in QUERIES]
        for result in results:
            assert result.rows >= 1, result.name
            assert EXPECTED_INDEXES[result.name] in result.indexes, result.plan
            assert "Seq Scan" not in result.plan, result.plan
            assert result.median_ms > 0 and result.p95_ms >= result.median_ms
        assert json.loads(json.dumps([asdict(r) for r in results]))[0]["name"] == "balance lookup"
        assert time_reconcile(conn) > 0


def test_reconcile_timing_refuses_broken_books(seeded_db: str) -> None:
    with psycopg.connect(seeded_db) as conn:
        fill_ledgers(conn, 1_000, 50, seed=1, now=NOW)
        conn.execute("UPDATE user_credit_balance SET amount = amount + 1 WHERE amount > 0")
        conn.commit()
        with pytest.raises(BenchQueryError, match="balance_equals_ledger_sum"):
            time_reconcile(conn)


def test_fill_needs_the_seed(migrated_db: str) -> None:
    with psycopg.connect(migrated_db) as conn, pytest.raises(FillError):
        fill_ledgers(conn, 100, 10, seed=1, now=NOW)


def test_cli_measures_each_size_in_its_own_database(pg_admin_url: str, tmp_path: Path) -> None:
    out = tmp_path / "queries.json"
    args = ["--sizes", "0,3000", "--users", "100", "--repeats", "3", "--out", str(out)]
    result = CliRunner().invoke(queries, [*args, "--database-url", pg_admin_url])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert [s["size"] for s in report["sizes"]] == [0, 3000]
    assert [s["fill"]["rows_after"] for s in report["sizes"]] == [0, 3000]
    assert all(len(s["queries"]) == 4 for s in report["sizes"])
    assert "coupon validation" in result.output
    with psycopg.connect(pg_admin_url) as conn:  # dropped afterwards
        left = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'bench_ledger_%'"
        ).fetchone()
        assert left is not None and left[0] == 0


def test_cli_rejects_bad_sizes() -> None:
    result = CliRunner().invoke(queries, ["--sizes", "1,x"])
    assert result.exit_code == 2
    assert "not a comma-separated list" in result.output
