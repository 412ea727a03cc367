"""The seed plan's six Phase 4 integration tests, on the real schema with the seed data.

Balance changes also go to credit_deduction_ledger (one row per change, with balance
before and after), as the design brief asks, so every test ends with a consistent chain.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from pipeline.seed import ADMIN_USER_ID, PRICES, PROVIDERS, TIER_MARGINS, seed
from tests.integration.user_tables import USER_OWNED_TABLES

pytestmark = pytest.mark.integration

USD_PER_CREDIT = Decimal("0.001")


@pytest.fixture
def conn(migrated_db: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with psycopg.connect(migrated_db, autocommit=True, row_factory=dict_row) as connection:
        seed(connection)
        yield connection


def one(conn: psycopg.Connection[dict[str, Any]], query: Any, params: Any = ()) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row


def create_user(conn: psycopg.Connection[dict[str, Any]]) -> uuid.UUID:
    user_id = uuid.uuid4()
    conn.execute(
        "INSERT INTO users (id, email, role) VALUES (%s, %s, 'user')", (user_id, f"{user_id}@test")
    )
    return user_id


def create_pro_subscription(
    conn: psycopg.Connection[dict[str, Any]], user_id: uuid.UUID, days_left: int = 30
) -> uuid.UUID:
    now = datetime.now(UTC)
    row = one(
        conn,
        """
        INSERT INTO subscription_monetization (user_id, tier, billing_cycle, status,
            base_price_usd, monthly_credit_allocation, current_period_start, current_period_end)
        VALUES (%s, 'pro', 'monthly', 'active', 19.00, 20000, %s, %s)
        RETURNING id
        """,
        (user_id, now - timedelta(days=30 - days_left), now + timedelta(days=days_left)),
    )
    return row["id"]  # type: ignore[no-any-return]


def grant_credits(
    conn: psycopg.Connection[dict[str, Any]],
    user_id: uuid.UUID,
    amount: int,
    *,
    source: str,
    subscription_id: uuid.UUID | None = None,
    expires_at: datetime | None = None,
    idempotency_key: str | None = None,
) -> int | None:
    """Allocate credits and apply them to the balance in one transaction.

    Returns the new balance, or None when the idempotency key was already used.
    """
    now = datetime.now(UTC)
    with conn.transaction():
        allocation = conn.execute(
            """
            INSERT INTO credit_allocation (user_id, subscription_id, amount, source,
                allocation_period_start, allocation_period_end, expires_at,
                applied_to_balance_at, credit_type, idempotency_key)
            VALUES (%s, %s, %s, %s, %s, %s, %s, now(), %s, %s)
            ON CONFLICT (idempotency_key) DO NOTHING
            RETURNING id
            """,
            (
                user_id,
                subscription_id,
                amount,
                source,
                now,
                expires_at or now + timedelta(days=30),
                expires_at,
                source,
                idempotency_key,
            ),
        ).fetchone()
        if allocation is None:
            return None
        balance = one(
            conn,
            """
            INSERT INTO user_credit_balance AS b (user_id, amount) VALUES (%s, %s)
            ON CONFLICT (user_id) DO UPDATE SET amount = b.amount + EXCLUDED.amount,
                updated_at = now()
            RETURNING amount
            """,
            (user_id, amount),
        )["amount"]
        conn.execute(
            """
            INSERT INTO credit_deduction_ledger (user_id, amount, balance_before, balance_after,
                reason, status)
            VALUES (%s, %s, %s, %s, %s, 'completed')
            """,
            (user_id, amount, balance - amount, balance, f"grant_{source}"),
        )
        conn.execute(
            "INSERT INTO user_credit_source (user_id, source, amount, expires_at) "
            "VALUES (%s, %s, %s, %s)",
            (user_id, source, amount, expires_at),
        )
    return balance  # type: ignore[no-any-return]


def balance_of(conn: psycopg.Connection[dict[str, Any]], user_id: uuid.UUID) -> int:
    row = one(conn, "SELECT amount FROM user_credit_balance WHERE user_id = %s", (user_id,))
    return row["amount"]  # type: ignore[no-any-return]


def assert_chain(conn: psycopg.Connection[dict[str, Any]], user_id: uuid.UUID) -> None:
    """Each row starts where the previous ended; the last ends at the balance."""
    rows = conn.execute(
        "SELECT balance_before, balance_after FROM credit_deduction_ledger "
        "WHERE user_id = %s ORDER BY created_at, processed_at",
        (user_id,),
    ).fetchall()
    assert rows
    assert rows[0]["balance_before"] == 0
    for previous, row in itertools.pairwise(rows):
        assert row["balance_before"] == previous["balance_after"]
    assert rows[-1]["balance_after"] == balance_of(conn, user_id)


def openai_provider(conn: psycopg.Connection[dict[str, Any]]) -> uuid.UUID:
    row = one(conn, "SELECT id FROM providers WHERE api_type = 'openai'")
    return row["id"]  # type: ignore[no-any-return]


# -- Test 1 ------------------------------------------------------------------------------


def test_new_subscription_creates_a_credit_balance(
    conn: psycopg.Connection[dict[str, Any]],
) -> None:
    user_id = create_user(conn)
    subscription_id = create_pro_subscription(conn, user_id)

    balance = grant_credits(
        conn, user_id, 20000, source="subscription", subscription_id=subscription_id
    )

    subscription = one(
        conn, "SELECT tier, status FROM subscription_monetization WHERE id = %s", (subscription_id,)
    )
    allocation = one(
        conn, "SELECT amount, credit_type FROM credit_allocation WHERE user_id = %s", (user_id,)
    )
    assert (subscription["tier"], subscription["status"]) == ("pro", "active")
    assert (allocation["amount"], allocation["credit_type"]) == (20000, "subscription")
    assert balance == balance_of(conn, user_id) == 20000
    assert_chain(conn, user_id)


# -- Test 2 ------------------------------------------------------------------------------


def test_pro_to_pro_max_upgrade_prorates_and_allocates_credits(
    conn: psycopg.Connection[dict[str, Any]],
) -> None:
    user_id = create_user(conn)
    subscription_id = create_pro_subscription(conn, user_id, days_left=15)
    grant_credits(conn, user_id, 20000, source="subscription", subscription_id=subscription_id)

    days_remaining, days_in_cycle = 15, 30
    unused = Decimal("19.00") * days_remaining / days_in_cycle
    new_cost = Decimal("39.00") * days_remaining / days_in_cycle
    with conn.transaction():
        conn.execute(
            """
            INSERT INTO proration_event (user_id, subscription_id, from_tier, to_tier,
                change_type, days_remaining, days_in_cycle, unused_credit_value_usd,
                new_tier_prorated_cost_usd, net_charge_usd, effective_date, status)
            VALUES (%s, %s, 'pro', 'pro_max', 'upgrade', %s, %s, %s, %s, %s, now(), 'pending')
            """,
            (
                user_id,
                subscription_id,
                days_remaining,
                days_in_cycle,
                unused,
                new_cost,
                new_cost - unused,
            ),
        )
        conn.execute(
            "UPDATE subscription_monetization "
            "SET tier = 'pro_max', monthly_credit_allocation = 50000, updated_at = now() "
            "WHERE id = %s",
            (subscription_id,),
        )
    prorated_credits = 50000 * days_remaining // days_in_cycle
    grant_credits(
        conn, user_id, prorated_credits, source="subscription", subscription_id=subscription_id
    )

    event = one(
        conn,
        "SELECT to_tier, net_charge_usd FROM proration_event WHERE subscription_id = %s",
        (subscription_id,),
    )
    assert (event["to_tier"], event["net_charge_usd"]) == ("pro_max", Decimal("10.00"))
    tier = one(conn, "SELECT tier FROM subscription_monetization WHERE id = %s", (subscription_id,))
    assert tier["tier"] == "pro_max"
    assert prorated_credits == 25000
    assert balance_of(conn, user_id) == 45000
    assert_chain(conn, user_id)


# -- Test 3 ------------------------------------------------------------------------------


def test_credit_grant_coupon_updates_the_balance(conn: psycopg.Connection[dict[str, Any]]) -> None:
    user_id = create_user(conn)
    valid_until = datetime.now(UTC) + timedelta(days=365)
    coupon_id = one(
        conn,
        """
        INSERT INTO coupon (code, coupon_type, discount_value, discount_type, valid_from,
            valid_until, is_active, created_by)
        VALUES ('REFER20', 'fixed_amount_discount', 20.00, 'credits', now(), %s, true, %s)
        RETURNING id
        """,
        (valid_until, ADMIN_USER_ID),
    )["id"]
    conn.execute(
        "INSERT INTO coupon_usage_limit (coupon_id, max_total_uses, max_uses_per_user) "
        "VALUES (%s, 1000, 1)",
        (coupon_id,),
    )
    conn.execute(
        """
        INSERT INTO coupon_validation_rule (coupon_id, rule_type, rule_value, is_active)
        VALUES (%s, 'first_purchase_only', '{"value": true}', true),
               (%s, 'min_purchase_usd', '{"value": 10}', false)
        """,
        (coupon_id, coupon_id),
    )

    # The seed's coupon validation query: the coupon, its limits and its active rules.
    coupon = one(
        conn,
        """
        SELECT c.id, c.discount_value, l.max_uses_per_user,
               (SELECT array_agg(r.rule_type) FROM coupon_validation_rule r
                WHERE r.coupon_id = c.id AND r.is_active) AS active_rules
        FROM coupon c LEFT JOIN coupon_usage_limit l ON l.coupon_id = c.id
        WHERE c.code = 'REFER20' AND c.is_active AND c.deleted_at IS NULL
        """,
    )
    assert coupon["active_rules"] == ["first_purchase_only"]

    redemption_id = one(
        conn,
        """
        INSERT INTO coupon_redemption (coupon_id, user_id, subscription_id, discount_applied_usd,
            original_amount_usd, final_amount_usd, redemption_status)
        VALUES (%s, %s, NULL, 20.00, 0, -20.00, 'success')
        RETURNING id
        """,
        (coupon_id, user_id),
    )["id"]
    conn.execute(
        "UPDATE coupon_usage_limit SET total_uses = total_uses + 1, "
        "unique_users = unique_users + 1 WHERE coupon_id = %s",
        (coupon_id,),
    )
    # USD 20 at USD 0.001 per credit is 20,000 credits, not the seed's "$1 = 1 credit".
    credits = int(coupon["discount_value"] / USD_PER_CREDIT)
    key = f"coupon_redemption:{redemption_id}"
    assert grant_credits(
        conn, user_id, credits, source="coupon", expires_at=valid_until, idempotency_key=key
    )
    # A retried grant for the same redemption changes nothing.
    assert (
        grant_credits(
            conn, user_id, credits, source="coupon", expires_at=valid_until, idempotency_key=key
        )
        is None
    )

    assert balance_of(conn, user_id) == 20000
    allocation = one(
        conn,
        "SELECT credit_type, expires_at FROM credit_allocation WHERE idempotency_key = %s",
        (key,),
    )
    assert (allocation["credit_type"], allocation["expires_at"]) == ("coupon", valid_until)
    assert_chain(conn, user_id)


# -- Test 4 ------------------------------------------------------------------------------


def test_api_request_deducts_credits_priced_from_the_price_table(
    conn: psycopg.Connection[dict[str, Any]],
) -> None:
    user_id = create_user(conn)
    subscription_id = create_pro_subscription(conn, user_id)
    grant_credits(conn, user_id, 1000, source="subscription", subscription_id=subscription_id)
    provider_id = openai_provider(conn)
    started = datetime.now(UTC)
    request_id = uuid.uuid4()
    input_tokens, output_tokens = 1000, 2000

    price = one(
        conn,
        """
        SELECT input_price_per_1k, output_price_per_1k FROM model_provider_pricing
        WHERE provider_id = %s AND model_name = 'gpt-4o' AND is_active
          AND effective_from <= %s AND (effective_until IS NULL OR effective_until > %s)
        ORDER BY effective_from DESC LIMIT 1
        """,
        (provider_id, started, started),
    )
    multiplier = one(
        conn,
        """
        SELECT margin_multiplier FROM pricing_configs
        WHERE scope_type = 'tier' AND subscription_tier = 'pro'
          AND approval_status = 'approved' AND is_active
          AND effective_from <= %s AND (effective_until IS NULL OR effective_until > %s)
        ORDER BY effective_from DESC LIMIT 1
        """,
        (started, started),
    )["margin_multiplier"]
    vendor_cost = (
        input_tokens * price["input_price_per_1k"] + output_tokens * price["output_price_per_1k"]
    ) / 1000
    credits = math.ceil(vendor_cost * multiplier / USD_PER_CREDIT)
    assert vendor_cost == Decimal("0.035")
    assert vendor_cost * multiplier == Decimal("0.0525")
    assert credits == 53

    # The worker's transaction, with the worker's privileges. The deduction row comes
    # first: the ledgers are append-only, so the usage row references it on insert.
    with conn.transaction():
        conn.execute("SET LOCAL ROLE pipeline_writer")
        before = one(
            conn,
            "SELECT amount FROM user_credit_balance WHERE user_id = %s FOR UPDATE",
            (user_id,),
        )["amount"]
        deduction_id = one(
            conn,
            """
            INSERT INTO credit_deduction_ledger (user_id, amount, balance_before, balance_after,
                request_id, token_vendor_cost, margin_multiplier, gross_margin, reason, status)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'api_completion', 'completed')
            RETURNING id
            """,
            (
                user_id,
                -credits,
                before,
                before - credits,
                request_id,
                vendor_cost,
                multiplier,
                credits * USD_PER_CREDIT - vendor_cost,
            ),
        )["id"]
        conn.execute(
            """
            INSERT INTO token_usage_ledger (request_id, user_id, subscription_id, model_id,
                provider_id, input_tokens, output_tokens, vendor_cost, margin_multiplier,
                credit_value_usd, credits_deducted, request_type, request_started_at,
                request_completed_at, status, user_tier_at_request, deduction_record_id,
                event_fingerprint)
            VALUES (%s, %s, %s, 'gpt-4o', %s, %s, %s, %s, %s, %s, %s, 'completion', %s, now(),
                'success', 'pro', %s, %s)
            """,
            (
                request_id,
                user_id,
                subscription_id,
                provider_id,
                input_tokens,
                output_tokens,
                vendor_cost,
                multiplier,
                credits * USD_PER_CREDIT,
                credits,
                started,
                deduction_id,
                hashlib.sha256(request_id.bytes).digest(),
            ),
        )
        conn.execute(
            "UPDATE user_credit_balance SET amount = amount - %s, last_deduction_at = now(), "
            "last_deduction_amount = %s, updated_at = now() WHERE user_id = %s",
            (credits, credits, user_id),
        )

    assert balance_of(conn, user_id) == 947
    ledger = one(
        conn,
        """
        SELECT d.amount, d.balance_after, u.total_tokens, u.credits_deducted, u.gross_margin_usd
        FROM credit_deduction_ledger d
        JOIN token_usage_ledger u ON u.deduction_record_id = d.id
        WHERE d.request_id = %s
        """,
        (request_id,),
    )
    assert ledger == {
        "amount": -53,
        "balance_after": 947,
        "total_tokens": 3000,
        "credits_deducted": 53,
        "gross_margin_usd": Decimal("0.018"),
    }
    assert_chain(conn, user_id)


# -- Test 5 ------------------------------------------------------------------------------


def test_byok_user_is_not_charged(conn: psycopg.Connection[dict[str, Any]]) -> None:
    user_id = create_user(conn)
    conn.execute(
        """
        INSERT INTO perpetual_license (user_id, license_key, purchase_price_usd,
            purchased_version, eligible_until_version, max_activations, status)
        VALUES (%s, %s, 199.00, '1.0.0', '1.99.99', 3, 'active')
        """,
        (user_id, f"REPHLO-TEST-{user_id}"),
    )
    grant_credits(conn, user_id, 1000, source="bonus")
    request_id = uuid.uuid4()

    with conn.transaction():
        conn.execute("SET LOCAL ROLE pipeline_writer")
        byok = conn.execute(
            "SELECT 1 FROM perpetual_license "
            "WHERE user_id = %s AND status = 'active' AND byok_enabled",
            (user_id,),
        ).fetchone()
        assert byok is not None, "byok_enabled defaults to true"
        conn.execute(
            """
            INSERT INTO token_usage_ledger (request_id, user_id, model_id, provider_id,
                input_tokens, output_tokens, vendor_cost, margin_multiplier, credit_value_usd,
                credits_deducted, request_type, request_started_at, request_completed_at,
                status, user_tier_at_request, event_fingerprint)
            VALUES (%s, %s, 'gpt-4o', %s, 1000, 2000, 0, 0, 0, 0, 'completion', now(), now(),
                'success', 'perpetual', %s)
            """,
            (request_id, user_id, openai_provider(conn), hashlib.sha256(request_id.bytes).digest()),
        )

    assert balance_of(conn, user_id) == 1000
    usage = one(
        conn,
        "SELECT credits_deducted, gross_margin_usd, deduction_record_id FROM token_usage_ledger "
        "WHERE request_id = %s",
        (request_id,),
    )
    assert usage == {"credits_deducted": 0, "gross_margin_usd": 0, "deduction_record_id": None}
    deductions = conn.execute(
        "SELECT 1 FROM credit_deduction_ledger WHERE request_id = %s", (request_id,)
    ).fetchall()
    assert deductions == []


# -- Test 6 ------------------------------------------------------------------------------


def test_deleting_a_user_removes_every_row_of_the_user(
    conn: psycopg.Connection[dict[str, Any]],
) -> None:
    user_id, bystander_id = create_user(conn), create_user(conn)
    coupon_id = one(
        conn,
        """
        INSERT INTO coupon (code, coupon_type, discount_value, discount_type, valid_from,
            created_by)
        VALUES ('GDPR10', 'percentage_discount', 10.00, 'percentage', now(), %s) RETURNING id
        """,
        (ADMIN_USER_ID,),
    )["id"]
    for owner in (user_id, bystander_id):
        subscription_id = create_pro_subscription(conn, owner)
        grant_credits(conn, owner, 1000, source="subscription", subscription_id=subscription_id)
        conn.execute(
            """
            INSERT INTO billing_invoice (user_id, subscription_id, amount_due_usd, status,
                period_start, period_end)
            VALUES (%s, %s, 19.00, 'paid', now(), now() + interval '30 days')
            """,
            (owner, subscription_id),
        )
        conn.execute(
            """
            INSERT INTO proration_event (user_id, subscription_id, from_tier, to_tier,
                change_type, days_remaining, days_in_cycle, unused_credit_value_usd,
                new_tier_prorated_cost_usd, net_charge_usd, effective_date)
            VALUES (%s, %s, 'pro', 'pro_max', 'upgrade', 15, 30, 9.50, 19.50, 10.00, now())
            """,
            (owner, subscription_id),
        )
        conn.execute(
            """
            INSERT INTO perpetual_license (user_id, license_key, purchase_price_usd,
                purchased_version, eligible_until_version, byok_enabled)
            VALUES (%s, %s, 199.00, '1.0.0', '1.99.99', false)
            """,
            (owner, f"KEY-{owner}"),
        )
        conn.execute(
            """
            INSERT INTO coupon_redemption (coupon_id, user_id, subscription_id,
                discount_applied_usd, original_amount_usd, final_amount_usd)
            VALUES (%s, %s, %s, 1.90, 19.00, 17.10)
            """,
            (coupon_id, owner, subscription_id),
        )
        conn.execute(
            """
            INSERT INTO token_usage_ledger (request_id, user_id, subscription_id, model_id,
                provider_id, input_tokens, output_tokens, vendor_cost, margin_multiplier,
                credit_value_usd, credits_deducted, request_type, request_started_at,
                request_completed_at, event_fingerprint)
            VALUES (gen_random_uuid(), %s, %s, 'gpt-4o', %s, 10, 10, 0.0002, 1.5, 0.001, 1,
                'completion', now(), now(), '\\x00')
            """,
            (owner, subscription_id, openai_provider(conn)),
        )
        for summary in ("token_usage_daily_summary", "credit_usage_daily_summary"):
            insert = sql.SQL("INSERT INTO {} (user_id, summary_date) VALUES (%s, current_date)")
            conn.execute(insert.format(sql.Identifier(summary)), (owner,))

    tables_with_users = [
        row["table_name"]
        for row in conn.execute(
            """
            SELECT table_name FROM information_schema.columns
            WHERE table_schema = 'public' AND column_name = 'user_id'
            """
        ).fetchall()
    ]

    def rows_of(owner: uuid.UUID) -> dict[str, int]:
        counts = {}
        for table in tables_with_users:
            query = sql.SQL("SELECT count(*) AS n FROM {} WHERE user_id = %s")
            counts[table] = one(conn, query.format(sql.Identifier(table)), (owner,))["n"]
        return counts

    before = rows_of(user_id)
    filled = {table for table, n in before.items() if n > 0}
    assert filled >= USER_OWNED_TABLES

    conn.execute("DELETE FROM users WHERE id = %s", (user_id,))

    assert rows_of(user_id) == dict.fromkeys(tables_with_users, 0)
    assert rows_of(bystander_id) == before
    assert one(conn, "SELECT count(*) AS n FROM coupon WHERE id = %s", (coupon_id,))["n"] == 1


# -- seed data ---------------------------------------------------------------------------


def test_seed_is_idempotent(migrated_db: str) -> None:
    tables = ("users", "providers", "model_provider_pricing", "pricing_configs")

    def counts(conn: psycopg.Connection[Any]) -> list[int]:
        result = []
        for table in tables:
            query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            row = conn.execute(query).fetchone()
            assert row is not None
            result.append(row[0])
        return result

    with psycopg.connect(migrated_db, autocommit=True) as conn:
        first = seed(conn)
        after_first = counts(conn)
        second = seed(conn)
        assert counts(conn) == after_first
        tiers = conn.execute(
            "SELECT subscription_tier::text, approved_by, approval_status FROM pricing_configs"
        ).fetchall()

    assert (first.users, first.providers, first.model_prices, first.pricing_configs) == (
        1,
        len(PROVIDERS),
        len(PRICES),
        len(TIER_MARGINS),
    )
    assert after_first == [1, 4, 4, 6]
    assert second.total == 0
    assert sorted(tiers) == sorted(
        (tier, ADMIN_USER_ID, "approved")
        for tier in ("free", "pro", "pro_max", "enterprise_pro", "enterprise_max", "perpetual")
    )
