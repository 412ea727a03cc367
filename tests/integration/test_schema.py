"""The schema on a real PostgreSQL: constraints, cascades, privileges, migrate/rollback."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, LiteralString

import psycopg
import pytest
from click.testing import CliRunner, Result
from psycopg import errors, sql

from pipeline.cli.db_commands import db
from pipeline.schema.migrations import MigrationError, MigrationState, migrate, rollback, status
from pipeline.settings import Settings
from tests.integration.user_tables import USER_OWNED_TABLES

pytestmark = pytest.mark.integration


@pytest.fixture
def conn(migrated_db: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(migrated_db, autocommit=True) as connection:
        yield connection


def insert_user(conn: psycopg.Connection) -> uuid.UUID:
    user_id = uuid.uuid4()
    conn.execute("INSERT INTO users (id, email) VALUES (%s, %s)", (user_id, f"{user_id}@test"))
    return user_id


def insert_provider(conn: psycopg.Connection) -> uuid.UUID:
    row = conn.execute(
        "INSERT INTO providers (name, api_type) VALUES (%s, 'openai') RETURNING id",
        (f"provider-{uuid.uuid4()}",),
    ).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def insert_deduction(conn: psycopg.Connection, user_id: uuid.UUID) -> uuid.UUID:
    row = conn.execute(
        """
        INSERT INTO credit_deduction_ledger
            (user_id, amount, balance_before, balance_after, request_id, reason, status)
        VALUES (%s, -10, 100, 90, %s, 'api_completion', 'completed')
        RETURNING id
        """,
        (user_id, uuid.uuid4()),
    ).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def insert_usage(
    conn: psycopg.Connection,
    user_id: uuid.UUID,
    provider_id: uuid.UUID,
    deduction_id: uuid.UUID | None = None,
) -> uuid.UUID:
    row = conn.execute(
        """
        INSERT INTO token_usage_ledger (
            request_id, user_id, model_id, provider_id, input_tokens, output_tokens,
            vendor_cost, margin_multiplier, credit_value_usd, credits_deducted,
            request_type, request_started_at, request_completed_at,
            deduction_record_id, event_fingerprint
        )
        VALUES (%s, %s, 'gpt-4o', %s, 1000, 2000, 0.035, 1.50, 0.053, 53,
                'completion', now(), now(), %s, %s)
        RETURNING id
        """,
        (uuid.uuid4(), user_id, provider_id, deduction_id, hashlib.sha256(b"event").digest()),
    ).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def count(conn: psycopg.Connection, table: str, user_id: uuid.UUID) -> int:
    query = sql.SQL("SELECT count(*) FROM {} WHERE user_id = %s").format(sql.Identifier(table))
    row = conn.execute(query, (user_id,)).fetchone()
    assert row is not None
    return int(row[0])


def run_as(
    conn: psycopg.Connection, role: str, statement: LiteralString | sql.Composed, params: Any = ()
) -> None:
    """Run one statement as `role` in its own transaction, then roll it back."""
    with conn.transaction(force_rollback=True):
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        conn.execute(statement, params)


# -- types and constraints ---------------------------------------------------------------


def test_enum_columns_reject_unknown_values(conn: psycopg.Connection) -> None:
    user_id = insert_user(conn)
    subscription = """
        INSERT INTO subscription_monetization (user_id, tier, billing_cycle, status,
            base_price_usd, monthly_credit_allocation, current_period_start, current_period_end)
        VALUES (%s, %s, 'monthly', %s, 19.00, 20000, now(), now() + interval '30 days')
    """
    conn.execute(subscription, (user_id, "pro_max", "trial"))
    with pytest.raises(errors.InvalidTextRepresentation):
        conn.execute(subscription, (user_id, "enterprise", "active"))
    with pytest.raises(errors.InvalidTextRepresentation):
        conn.execute(subscription, (user_id, "pro", "paused"))
    with pytest.raises(errors.InvalidTextRepresentation):
        conn.execute("UPDATE subscription_monetization SET tier = 'invalid_tier'")
    with pytest.raises(errors.InvalidTextRepresentation):
        conn.execute(
            """
            INSERT INTO pricing_configs (scope_type, subscription_tier, margin_multiplier,
                effective_from, reason, created_by)
            VALUES ('tier', 'enterprise', 1.2, now(), 'initial_setup', %s)
            """,
            (user_id,),
        )
    labels = conn.execute(
        """
        SELECT t.typname, array_agg(e.enumlabel::text ORDER BY e.enumsortorder)
        FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid GROUP BY t.typname
        """
    ).fetchall()
    assert dict(labels) == {
        "subscription_tier": [
            "free",
            "pro",
            "pro_max",
            "enterprise_pro",
            "enterprise_max",
            "perpetual",
        ],
        "subscription_status": ["trial", "active", "past_due", "cancelled", "expired", "suspended"],
    }


def test_foreign_keys_are_enforced(conn: psycopg.Connection) -> None:
    user_id = insert_user(conn)
    provider_id = insert_provider(conn)
    with pytest.raises(errors.ForeignKeyViolation):
        insert_usage(conn, uuid.uuid4(), provider_id)
    with pytest.raises(errors.ForeignKeyViolation):
        insert_usage(conn, user_id, uuid.uuid4())
    with pytest.raises(errors.ForeignKeyViolation):
        insert_deduction(conn, uuid.uuid4())
    with pytest.raises(errors.ForeignKeyViolation):
        conn.execute("INSERT INTO user_credit_balance (user_id) VALUES (%s)", (uuid.uuid4(),))
    # A provider with recorded usage cannot disappear from under its ledger rows.
    insert_usage(conn, user_id, provider_id)
    with pytest.raises(errors.RestrictViolation):
        conn.execute("DELETE FROM providers WHERE id = %s", (provider_id,))


def test_generated_columns_are_computed_and_cannot_be_written(conn: psycopg.Connection) -> None:
    usage_id = insert_usage(conn, insert_user(conn), insert_provider(conn))
    row = conn.execute(
        "SELECT total_tokens, gross_margin_usd FROM token_usage_ledger WHERE id = %s",
        (usage_id,),
    ).fetchone()
    assert row == (3000, Decimal("0.01800000"))
    with pytest.raises(errors.GeneratedAlways):
        conn.execute("UPDATE token_usage_ledger SET total_tokens = 1 WHERE id = %s", (usage_id,))


def test_request_ids_are_unique_in_both_ledgers(conn: psycopg.Connection) -> None:
    user_id = insert_user(conn)
    request_id = uuid.uuid4()
    deduction = """
        INSERT INTO credit_deduction_ledger
            (user_id, amount, balance_before, balance_after, request_id, reason)
        VALUES (%s, -1, 5, 4, %s, 'api_completion')
    """
    conn.execute(deduction, (user_id, request_id))
    with pytest.raises(errors.UniqueViolation):
        conn.execute(deduction, (user_id, request_id))
    # Grants, expirations and reversals have no request: any number of NULLs.
    grant = """
        INSERT INTO credit_deduction_ledger (user_id, amount, balance_before, balance_after, reason)
        VALUES (%s, 100, 0, 100, 'grant')
    """
    conn.execute(grant, (user_id,))
    conn.execute(grant, (user_id,))


def test_deduction_rows_must_add_up(conn: psycopg.Connection) -> None:
    with pytest.raises(errors.CheckViolation):
        conn.execute(
            """
            INSERT INTO credit_deduction_ledger (user_id, amount, balance_before, balance_after,
                reason)
            VALUES (%s, -10, 100, 80, 'api_completion')
            """,
            (insert_user(conn),),
        )


def test_money_columns_are_exact_numerics(conn: psycopg.Connection) -> None:
    types = dict(
        conn.execute(
            """
            SELECT table_name || '.' || column_name,
                   format('%s(%s,%s)', data_type, numeric_precision, numeric_scale)
            FROM information_schema.columns
            WHERE table_schema = 'public'
              AND column_name IN ('vendor_cost', 'credit_value_usd', 'gross_margin_usd',
                                  'input_price_per_1k', 'margin_multiplier',
                                  'total_vendor_cost', 'total_gross_margin')
            """
        ).fetchall()
    )
    assert types["token_usage_ledger.vendor_cost"] == "numeric(10,8)"
    assert types["model_provider_pricing.input_price_per_1k"] == "numeric(10,8)"
    assert types["pricing_configs.margin_multiplier"] == "numeric(4,2)"
    assert types["token_usage_daily_summary.total_vendor_cost"] == "numeric(18,8)"
    assert types["credit_usage_daily_summary.total_gross_margin"] == "numeric(18,8)"
    assert not [column for column, kind in types.items() if not kind.startswith("numeric")]


def test_seed_composite_indexes_exist(conn: psycopg.Connection) -> None:
    names = {row[0] for row in conn.execute("SELECT indexname FROM pg_indexes").fetchall()}
    assert {
        "idx_subscription_user_period_status",
        "idx_coupon_redemption_user_status_date",
        "idx_proration_subscription_effective_status",
        "idx_billing_invoice_user_status_period_end",
    } <= names


# -- cascades ----------------------------------------------------------------------------


def test_deleting_a_coupon_keeps_its_redemptions(conn: psycopg.Connection) -> None:
    admin_id, user_id = insert_user(conn), insert_user(conn)
    coupon = conn.execute(
        """
        INSERT INTO coupon (code, coupon_type, discount_value, discount_type, valid_from,
            created_by)
        VALUES ('GONE10', 'fixed_amount_discount', 10.00, 'credits', now(), %s) RETURNING id
        """,
        (admin_id,),
    ).fetchone()
    assert coupon is not None
    conn.execute(
        "INSERT INTO coupon_usage_limit (coupon_id, max_total_uses) VALUES (%s, 100)", coupon
    )
    redemption = conn.execute(
        """
        INSERT INTO coupon_redemption (coupon_id, user_id, discount_applied_usd,
            original_amount_usd, final_amount_usd)
        VALUES (%s, %s, 10.00, 0, -10.00) RETURNING id
        """,
        (coupon[0], user_id),
    ).fetchone()
    assert redemption is not None

    conn.execute("DELETE FROM coupon WHERE id = %s", coupon)

    kept = conn.execute(
        "SELECT coupon_id, user_id FROM coupon_redemption WHERE id = %s", redemption
    ).fetchone()
    assert kept == (None, user_id)
    assert conn.execute("SELECT count(*) FROM coupon_usage_limit").fetchone() == (0,)


def test_deleting_a_user_removes_the_users_ledgers_and_summaries(
    conn: psycopg.Connection,
) -> None:
    user_id, other_id = insert_user(conn), insert_user(conn)
    provider_id = insert_provider(conn)
    for owner in (user_id, other_id):
        insert_usage(conn, owner, provider_id, insert_deduction(conn, owner))
        conn.execute(
            "INSERT INTO user_credit_source (user_id, source, amount) VALUES (%s, 'bonus', 5)",
            (owner,),
        )
        for summary in ("token_usage_daily_summary", "credit_usage_daily_summary"):
            insert = sql.SQL("INSERT INTO {} (user_id, summary_date) VALUES (%s, current_date)")
            conn.execute(insert.format(sql.Identifier(summary)), (owner,))

    conn.execute("DELETE FROM users WHERE id = %s", (user_id,))

    tables = (
        "token_usage_ledger",
        "credit_deduction_ledger",
        "user_credit_source",
        "token_usage_daily_summary",
        "credit_usage_daily_summary",
    )
    assert [count(conn, table, user_id) for table in tables] == [0] * len(tables)
    assert [count(conn, table, other_id) for table in tables] == [1] * len(tables)


def test_every_user_foreign_key_cascades(conn: psycopg.Connection) -> None:
    rules = conn.execute(
        """
        SELECT c.conrelid::regclass::text, a.attname, c.confdeltype
        FROM pg_constraint c
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
        WHERE c.contype = 'f' AND c.confrelid = 'users'::regclass AND a.attname = 'user_id'
        """
    ).fetchall()
    assert {table for table, _, _ in rules} >= USER_OWNED_TABLES
    assert [rule for rule in rules if rule[2] != "c"] == []


# -- privileges --------------------------------------------------------------------------


def test_pipeline_writer_cannot_rewrite_or_delete_ledger_rows(conn: psycopg.Connection) -> None:
    user_id = insert_user(conn)
    deduction_id = insert_deduction(conn, user_id)
    insert_usage(conn, user_id, insert_provider(conn), deduction_id)

    forbidden = [
        "UPDATE token_usage_ledger SET credits_deducted = 0",
        "DELETE FROM token_usage_ledger",
        "UPDATE credit_deduction_ledger SET amount = 0, balance_after = balance_before",
        "DELETE FROM credit_deduction_ledger",
        "TRUNCATE token_usage_ledger",
        "UPDATE providers SET is_enabled = false",
        "DELETE FROM users",
    ]
    for statement in forbidden:
        with pytest.raises(errors.InsufficientPrivilege):
            run_as(conn, "pipeline_writer", statement)

    # What the worker does is allowed: append, reverse, read reference data.
    run_as(
        conn,
        "pipeline_writer",
        """
        UPDATE credit_deduction_ledger
        SET status = 'reversed', reversed_at = now(), reversed_by = %s,
            reversal_reason = 'duplicate charge'
        WHERE id = %s
        """,
        (user_id, deduction_id),
    )
    run_as(
        conn,
        "pipeline_writer",
        """
        INSERT INTO credit_deduction_ledger (user_id, amount, balance_before, balance_after,
            reason)
        VALUES (%s, 10, 90, 100, 'reversal')
        """,
        (user_id,),
    )
    run_as(conn, "pipeline_writer", "SELECT * FROM pricing_configs, perpetual_license")

    # The owner can still delete the user, and the ledgers go with it.
    conn.execute("DELETE FROM users WHERE id = %s", (user_id,))
    assert count(conn, "token_usage_ledger", user_id) == 0
    assert count(conn, "credit_deduction_ledger", user_id) == 0


def test_finance_reader_reads_the_books_and_writes_nothing(conn: psycopg.Connection) -> None:
    user_id = insert_user(conn)
    insert_usage(conn, user_id, insert_provider(conn), insert_deduction(conn, user_id))
    for table in (
        "token_usage_ledger",
        "credit_deduction_ledger",
        "token_usage_daily_summary",
        "credit_usage_daily_summary",
        "providers",
        "model_provider_pricing",
        "pricing_configs",
        "user_credit_source",  # what outstanding credits are made of (report credits)
    ):
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
        run_as(conn, "finance_reader", query)
    for statement in (
        "UPDATE token_usage_ledger SET status = 'x'",
        "DELETE FROM credit_deduction_ledger",
        "INSERT INTO token_usage_daily_summary (user_id, summary_date) "
        "SELECT id, current_date FROM users",
        "UPDATE pricing_configs SET margin_multiplier = 9",
        "SELECT count(*) FROM users",
        "SELECT count(*) FROM user_credit_balance",
    ):
        with pytest.raises(errors.InsufficientPrivilege):
            run_as(conn, "finance_reader", statement)


def test_the_roles_cannot_log_in(conn: psycopg.Connection) -> None:
    rows = conn.execute(
        "SELECT rolname, rolcanlogin FROM pg_roles "
        "WHERE rolname IN ('pipeline_writer', 'finance_reader') ORDER BY rolname"
    ).fetchall()
    assert rows == [("finance_reader", False), ("pipeline_writer", False)]


# -- the migration runner ----------------------------------------------------------------

CATALOG_QUERIES: dict[str, LiteralString] = {
    "columns": """
        SELECT table_name, column_name, ordinal_position, data_type, udt_name,
               character_maximum_length, numeric_precision, numeric_scale, is_nullable,
               column_default, is_generated, generation_expression
        FROM information_schema.columns WHERE table_schema = 'public'
        ORDER BY table_name, column_name
    """,
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'
        ORDER BY tablename, indexname
    """,
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace
        ORDER BY 1, 2
    """,
    "enums": """
        SELECT t.typname, e.enumsortorder, e.enumlabel
        FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid ORDER BY 1, 2
    """,
    "table_privileges": """
        SELECT grantee, table_name, privilege_type FROM information_schema.table_privileges
        WHERE table_schema = 'public' ORDER BY 1, 2, 3
    """,
    "column_privileges": """
        SELECT grantee, table_name, column_name, privilege_type
        FROM information_schema.column_privileges
        WHERE table_schema = 'public' AND grantee IN ('pipeline_writer', 'finance_reader')
        ORDER BY 1, 2, 3, 4
    """,
    "schema_privileges": "SELECT nspacl::text FROM pg_namespace WHERE nspname = 'public'",
    "roles": """
        SELECT rolname, rolcanlogin FROM pg_roles
        WHERE rolname IN ('pipeline_writer', 'finance_reader') ORDER BY 1
    """,
}


def catalog(conn: psycopg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {name: conn.execute(query).fetchall() for name, query in CATALOG_QUERIES.items()}


def test_migrate_rollback_all_migrate_gives_the_identical_schema(empty_db: str) -> None:
    with psycopg.connect(empty_db, autocommit=True) as conn:
        applied = migrate(conn)
        assert applied and applied[0] == "001_enums_and_users"
        first = catalog(conn)
        assert len(first["columns"]) > 200

        assert rollback(conn, steps=len(applied)) == list(reversed(applied))
        emptied = catalog(conn)
        assert {row[0] for row in emptied["columns"]} == {"schema_migrations"}
        assert emptied["enums"] == []

        assert migrate(conn) == applied
        assert catalog(conn) == first


def test_migrate_is_a_no_op_when_up_to_date(conn: psycopg.Connection) -> None:
    assert migrate(conn) == []
    assert {line.state for line in status(conn)} == {MigrationState.APPLIED}
    assert rollback(conn, steps=1) != []
    assert [line.state for line in status(conn)][-1] == MigrationState.PENDING
    assert len(migrate(conn)) == 1


def test_concurrent_migrators_apply_each_migration_once(empty_db: str) -> None:
    results: list[list[str]] = []
    failures: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(empty_db, autocommit=True) as conn:
                results.append(migrate(conn))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    everything = [name for names in results for name in names]
    assert sorted(everything) == sorted(set(everything))
    with psycopg.connect(empty_db, autocommit=True) as conn:
        recorded = conn.execute("SELECT name FROM schema_migrations ORDER BY version").fetchall()
    assert [row[0] for row in recorded] == sorted(everything)


def test_migrate_refuses_a_connection_inside_a_transaction(conn: psycopg.Connection) -> None:
    with conn.transaction(), pytest.raises(MigrationError, match="open transaction"):
        migrate(conn)


def test_a_failing_migration_leaves_nothing_behind(empty_db: str, tmp_path: Any) -> None:
    (tmp_path / "001_ok.up.sql").write_text("CREATE TABLE ok (id int);")
    (tmp_path / "001_ok.down.sql").write_text("DROP TABLE ok;")
    (tmp_path / "002_bad.up.sql").write_text("CREATE TABLE half (id int); SELECT 1/0;")
    (tmp_path / "002_bad.down.sql").write_text("DROP TABLE half;")
    with psycopg.connect(empty_db, autocommit=True) as conn:
        with pytest.raises(MigrationError, match="002_bad failed: division by zero"):
            migrate(conn, tmp_path)
        assert conn.execute("SELECT to_regclass('half')").fetchone() == (None,)
        states = [(line.name, line.state) for line in status(conn, tmp_path)]
        assert states == [("001_ok", MigrationState.APPLIED), ("002_bad", MigrationState.PENDING)]


def test_db_commands_migrate_seed_report_and_fail_in_one_line(empty_db: str) -> None:
    settings = Settings.model_validate({"DATABASE_URL": empty_db})
    runner = CliRunner()

    def run(*args: str) -> Result:
        return runner.invoke(db, list(args), obj=settings)

    assert run("status").output.splitlines()[0].split() == ["001_enums_and_users", "pending"]
    migrated = run("migrate")
    assert migrated.exit_code == 0
    assert migrated.output.splitlines()[0] == "applied 001_enums_and_users"
    assert run("migrate").output == "schema is up to date\n"
    assert run("seed").output.startswith("seeded 1 users, 4 providers")
    assert run("seed").output == "already seeded, nothing changed\n"
    assert "applied" in run("status").output
    rolled_back = run("rollback", "--steps", "2")
    assert rolled_back.exit_code == 0
    assert len(rolled_back.output.splitlines()) == 2

    missing = Settings.model_validate({"DATABASE_URL": f"{empty_db} dbname=no_such_database"})
    failed = runner.invoke(db, ["status"], obj=missing)
    assert failed.exit_code == 1
    assert failed.output.startswith("Error: cannot use PostgreSQL at DATABASE_URL (")
    assert 'database "no_such_database" does not exist' in failed.output
    assert len(failed.output.splitlines()) == 1
