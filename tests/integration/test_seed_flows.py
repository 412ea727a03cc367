"""The seed plan's six Phase 4 integration tests, on the real schema with the seed data.

Tests 1-3 run the product's own flows (`pipeline.money.subscriptions`, `pipeline.money.coupons`), which
grant through `pipeline.money.credits.grant`; every test ends with a consistent balance chain and,
for those flows, a clean `reconcile`. The refusals and the CLI of those flows follow.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql
from psycopg.rows import dict_row

from pipeline.cli import main
from pipeline.errors import Refused
from pipeline.money import coupons, subscriptions
from pipeline.money.credits import Grant, grant
from pipeline.money.reconcile import reconcile
from pipeline.schema.seed import ADMIN_USER_ID, PRICES, PROVIDERS, TIER_MARGINS, seed
from tests.integration.user_tables import USER_OWNED_TABLES

pytestmark = pytest.mark.integration

USD_PER_CREDIT = Decimal("0.001")
PRO, PRO_MAX = subscriptions.CATALOG["pro"], subscriptions.CATALOG["pro_max"]
Conn = psycopg.Connection[dict[str, Any]]


@pytest.fixture
def conn(migrated_db: str) -> Iterator[Conn]:
    """Dict rows, for the tests' own queries."""
    with psycopg.connect(migrated_db, autocommit=True, row_factory=dict_row) as connection:
        seed(connection)
        yield connection


@pytest.fixture
def plain(conn: Conn, migrated_db: str) -> Iterator[psycopg.Connection[Any]]:
    """Default (tuple) rows, as the product code expects, on the same database."""
    with psycopg.connect(migrated_db, autocommit=True) as connection:
        yield connection


def one(conn: Conn, query: Any, params: Any = ()) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row


def create_user(conn: Conn) -> uuid.UUID:
    user_id = uuid.uuid4()
    conn.execute(
        "INSERT INTO users (id, email, role) VALUES (%s, %s, 'user')", (user_id, f"{user_id}@test")
    )
    return user_id


def create_pro_subscription(conn: Conn, user_id: uuid.UUID, days_left: int = 30) -> uuid.UUID:
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


def balance_of(conn: Conn, user_id: uuid.UUID) -> int:
    row = one(conn, "SELECT amount FROM user_credit_balance WHERE user_id = %s", (user_id,))
    return row["amount"]  # type: ignore[no-any-return]


def assert_chain(conn: Conn, user_id: uuid.UUID) -> None:
    """Each row starts where the previous ended; the last ends at the balance."""
    rows = conn.execute(
        "SELECT balance_before, balance_after FROM credit_deduction_ledger "
        "WHERE user_id = %s ORDER BY seq",
        (user_id,),
    ).fetchall()
    assert rows
    assert rows[0]["balance_before"] == 0
    for previous, row in itertools.pairwise(rows):
        assert row["balance_before"] == previous["balance_after"]
    assert rows[-1]["balance_after"] == balance_of(conn, user_id)


def assert_books_clean(plain: psycopg.Connection[Any]) -> None:
    assert [str(v) for v in reconcile(plain)] == []


def openai_provider(conn: Conn) -> uuid.UUID:
    row = one(conn, "SELECT id FROM providers WHERE api_type = 'openai'")
    return row["id"]  # type: ignore[no-any-return]


def create_coupon(
    conn: Conn,
    code: str,
    *,
    valid_from: datetime | None = None,
    valid_until: datetime | None = None,
    is_active: bool = True,
    deleted: bool = False,
    max_total_uses: int | None = 1000,
    max_uses_per_user: int = 1,
) -> uuid.UUID:
    """A USD 20 credits coupon, like the seed's REFER20, with its usage limits."""
    now = datetime.now(UTC)
    coupon_id: uuid.UUID = one(
        conn,
        """
        INSERT INTO coupon (code, coupon_type, discount_value, discount_type, valid_from,
            valid_until, is_active, created_by, deleted_at)
        VALUES (%s, 'fixed_amount_discount', 20.00, 'credits', %s, %s, %s, %s, %s)
        RETURNING id
        """,
        (
            code, valid_from or now - timedelta(minutes=1), valid_until or now + timedelta(days=365),
            is_active, ADMIN_USER_ID, now if deleted else None,
        ),
    )["id"]  # fmt: skip
    conn.execute(
        "INSERT INTO coupon_usage_limit (coupon_id, max_total_uses, max_uses_per_user) "
        "VALUES (%s, %s, %s)",
        (coupon_id, max_total_uses, max_uses_per_user),
    )
    return coupon_id


# -- Test 1 ------------------------------------------------------------------------------


def test_new_subscription_creates_a_credit_balance(
    conn: Conn, plain: psycopg.Connection[Any]
) -> None:
    user_id = create_user(conn)
    now = datetime.now(UTC)

    result = subscriptions.subscribe(plain, user_id, PRO, now)

    assert isinstance(result, subscriptions.Subscribed)
    subscription = one(
        conn,
        "SELECT tier, status, base_price_usd, monthly_credit_allocation, current_period_end "
        "FROM subscription_monetization WHERE id = %s",
        (result.subscription_id,),
    )
    allocation = one(
        conn,
        "SELECT amount, credit_type, subscription_id, expires_at, idempotency_key "
        "FROM credit_allocation WHERE user_id = %s",
        (user_id,),
    )
    assert subscription == {
        "tier": "pro",
        "status": "active",
        "base_price_usd": Decimal("19.00"),
        "monthly_credit_allocation": 20000,
        "current_period_end": now + timedelta(days=30),
    }
    assert allocation == {
        "amount": 20000,
        "credit_type": "subscription",
        "subscription_id": result.subscription_id,
        "expires_at": now + timedelta(days=30),
        "idempotency_key": f"subscription:{result.subscription_id}:{now.isoformat()}",
    }
    assert result.balance_after == balance_of(conn, user_id) == 20000
    assert_chain(conn, user_id)
    assert_books_clean(plain)

    # One live subscription per user: a second subscribe is refused and grants nothing.
    again = subscriptions.subscribe(plain, user_id, PRO_MAX, now)
    assert isinstance(again, Refused)
    assert again.reason is subscriptions.Refusal.ALREADY_SUBSCRIBED
    assert balance_of(conn, user_id) == 20000


# -- Test 2 ------------------------------------------------------------------------------


def test_pro_to_pro_max_upgrade_prorates_and_allocates_credits(
    conn: Conn, plain: psycopg.Connection[Any]
) -> None:
    user_id = create_user(conn)
    now = datetime.now(UTC)
    started = subscriptions.subscribe(plain, user_id, PRO, now - timedelta(days=15))
    assert isinstance(started, subscriptions.Subscribed)
    subscription_id = started.subscription_id

    upgraded = subscriptions.upgrade(plain, subscription_id, PRO_MAX, now)

    assert isinstance(upgraded, subscriptions.Upgraded) and upgraded.applied
    assert upgraded.proration == subscriptions.Proration(
        from_tier="pro",
        to_tier="pro_max",
        days_remaining=15,
        days_in_cycle=30,
        unused_value_usd=Decimal("9.50"),
        new_cost_usd=Decimal("19.50"),
        net_charge_usd=Decimal("10.00"),
        credits=25000,
    )
    event = one(
        conn,
        "SELECT from_tier, to_tier, change_type, days_remaining, days_in_cycle, "
        "unused_credit_value_usd, new_tier_prorated_cost_usd, net_charge_usd "
        "FROM proration_event WHERE subscription_id = %s",
        (subscription_id,),
    )
    assert event == {
        "from_tier": "pro",
        "to_tier": "pro_max",
        "change_type": "upgrade",
        "days_remaining": 15,
        "days_in_cycle": 30,
        "unused_credit_value_usd": Decimal("9.50"),
        "new_tier_prorated_cost_usd": Decimal("19.50"),
        "net_charge_usd": Decimal("10.00"),
    }
    subscription = one(
        conn,
        "SELECT tier, base_price_usd, monthly_credit_allocation FROM subscription_monetization "
        "WHERE id = %s",
        (subscription_id,),
    )
    assert subscription == {
        "tier": "pro_max",
        "base_price_usd": Decimal("39.00"),
        "monthly_credit_allocation": 50000,
    }
    prorated = one(
        conn,
        "SELECT amount, expires_at FROM credit_allocation WHERE idempotency_key = %s",
        (f"proration_event:{upgraded.proration_event_id}",),
    )
    assert prorated == {"amount": 25000, "expires_at": started.period_end}
    assert upgraded.balance_after == balance_of(conn, user_id) == 45000
    assert_chain(conn, user_id)
    assert_books_clean(plain)


def test_a_repeated_upgrade_grants_nothing(conn: Conn, plain: psycopg.Connection[Any]) -> None:
    user_id = create_user(conn)
    now = datetime.now(UTC)
    started = subscriptions.subscribe(plain, user_id, PRO, now - timedelta(days=15))
    assert isinstance(started, subscriptions.Subscribed)
    first = subscriptions.upgrade(plain, started.subscription_id, PRO_MAX, now)

    again = subscriptions.upgrade(plain, started.subscription_id, PRO_MAX, now + timedelta(hours=1))

    assert isinstance(first, subscriptions.Upgraded) and isinstance(again, subscriptions.Upgraded)
    assert (again.applied, again.proration_event_id) == (False, first.proration_event_id)
    assert again.proration == first.proration
    assert again.balance_before == again.balance_after == 45000
    counts = one(
        conn,
        "SELECT (SELECT count(*) FROM proration_event WHERE user_id = %(u)s) AS events, "
        "(SELECT count(*) FROM credit_allocation WHERE user_id = %(u)s) AS allocations",
        {"u": user_id},
    )
    assert counts == {"events": 1, "allocations": 2}
    assert balance_of(conn, user_id) == 45000
    assert_books_clean(plain)


def test_upgrade_refusals_change_nothing(conn: Conn, plain: psycopg.Connection[Any]) -> None:
    user_id = create_user(conn)
    now = datetime.now(UTC)
    started = subscriptions.subscribe(plain, user_id, PRO_MAX, now - timedelta(days=10))
    assert isinstance(started, subscriptions.Subscribed)

    down = subscriptions.upgrade(plain, started.subscription_id, PRO, now)
    missing = subscriptions.upgrade(plain, uuid.uuid4(), PRO_MAX, now)
    late = subscriptions.upgrade(
        plain, started.subscription_id, subscriptions.TierPlan("enterprise_max", Decimal(99), 90000),
        now + timedelta(days=25),
    )  # fmt: skip

    assert [r.reason for r in (down, missing, late) if isinstance(r, Refused)] == [
        subscriptions.Refusal.NOT_AN_UPGRADE,
        subscriptions.Refusal.UNKNOWN_SUBSCRIPTION,
        subscriptions.Refusal.PERIOD_ENDED,
    ]
    assert one(conn, "SELECT count(*) AS n FROM proration_event")["n"] == 0
    assert balance_of(conn, user_id) == 50000
    assert_books_clean(plain)


# -- Test 3 ------------------------------------------------------------------------------


def test_credit_grant_coupon_updates_the_balance(
    conn: Conn, plain: psycopg.Connection[Any]
) -> None:
    user_id = create_user(conn)
    valid_until = datetime.now(UTC) + timedelta(days=365)
    coupon_id = create_coupon(conn, "REFER20", valid_until=valid_until)
    conn.execute(
        """
        INSERT INTO coupon_validation_rule (coupon_id, rule_type, rule_value, is_active)
        VALUES (%s, 'first_purchase_only', '{"value": true}', true),
               (%s, 'min_purchase_usd', '{"value": 10}', false)
        """,
        (coupon_id, coupon_id),
    )

    redeemed = coupons.redeem(plain, user_id, "REFER20", datetime.now(UTC), USD_PER_CREDIT)

    # USD 20 at USD 0.001 per credit is 20,000 credits, not the seed's "$1 = 1 credit".
    assert isinstance(redeemed, coupons.Redeemed)
    assert (redeemed.credits, redeemed.balance_after) == (20000, 20000)
    key = f"coupon_redemption:{redeemed.redemption_id}"
    allocation = one(
        conn,
        "SELECT amount, credit_type, expires_at FROM credit_allocation WHERE idempotency_key = %s",
        (key,),
    )
    assert allocation == {"amount": 20000, "credit_type": "coupon", "expires_at": valid_until}
    redemption = one(
        conn,
        "SELECT coupon_id, discount_applied_usd, final_amount_usd, redemption_status "
        "FROM coupon_redemption WHERE id = %s",
        (redeemed.redemption_id,),
    )
    assert redemption == {
        "coupon_id": coupon_id,
        "discount_applied_usd": Decimal("20.00"),
        "final_amount_usd": Decimal("-20.00"),
        "redemption_status": "success",
    }
    limits = one(
        conn,
        "SELECT total_uses, unique_users, total_discount_applied_usd FROM coupon_usage_limit "
        "WHERE coupon_id = %s",
        (coupon_id,),
    )
    assert limits == {
        "total_uses": 1,
        "unique_users": 1,
        "total_discount_applied_usd": Decimal("20.00"),
    }

    # A retried grant for the same redemption changes nothing; so does a second redemption.
    retried = grant(plain, Grant(user_id, 20000, "coupon", valid_until, key))
    assert (retried.applied, retried.balance_after) == (False, 20000)
    again = coupons.redeem(plain, user_id, "REFER20", datetime.now(UTC), USD_PER_CREDIT)
    assert isinstance(again, Refused)
    assert again.reason is coupons.Refusal.USER_LIMIT_REACHED

    assert balance_of(conn, user_id) == 20000
    assert_chain(conn, user_id)
    assert_books_clean(plain)


def _refusal_setup(conn: Conn, plain: psycopg.Connection[Any], case: str) -> uuid.UUID:
    """A user holding 500 bonus credits and a coupon CODE that `case` makes unredeemable."""
    user_id = create_user(conn)
    grant(plain, Grant(user_id, 500, "bonus"))
    now = datetime.now(UTC)
    if case == "expired":
        create_coupon(conn, "CODE", valid_from=now - timedelta(days=9), valid_until=now)
    elif case == "not_yet_valid":
        create_coupon(conn, "CODE", valid_from=now + timedelta(days=1))
    elif case == "inactive":
        create_coupon(conn, "CODE", is_active=False)
    elif case == "deleted":
        create_coupon(conn, "CODE", deleted=True)
    elif case == "user_limit_reached":
        create_coupon(conn, "CODE", max_uses_per_user=1)
        assert isinstance(
            coupons.redeem(plain, user_id, "CODE", now, USD_PER_CREDIT), coupons.Redeemed
        )
    elif case == "total_limit_reached":
        create_coupon(conn, "CODE", max_total_uses=1)
        other = create_user(conn)
        assert isinstance(
            coupons.redeem(plain, other, "CODE", now, USD_PER_CREDIT), coupons.Redeemed
        )
    elif case == "first_purchase_only":
        coupon_id = create_coupon(conn, "CODE")
        conn.execute(
            "INSERT INTO coupon_validation_rule (coupon_id, rule_type, rule_value) "
            "VALUES (%s, 'first_purchase_only', '{\"value\": true}')",
            (coupon_id,),
        )
        create_pro_subscription(conn, user_id)
    elif case == "unsupported_rule":
        coupon_id = create_coupon(conn, "CODE")
        conn.execute(
            "INSERT INTO coupon_validation_rule (coupon_id, rule_type, rule_value) "
            "VALUES (%s, 'country_in', '{\"value\": [\"DE\"]}')",
            (coupon_id,),
        )
    return user_id


@pytest.mark.parametrize(
    "case",
    [
        "expired", "not_yet_valid", "inactive", "deleted", "user_limit_reached",
        "total_limit_reached", "first_purchase_only", "unsupported_rule", "unknown_coupon",
    ],
)  # fmt: skip
def test_a_refused_coupon_leaves_the_balance_unchanged(
    conn: Conn, plain: psycopg.Connection[Any], case: str
) -> None:
    user_id = _refusal_setup(conn, plain, case)
    before = balance_of(conn, user_id)
    allocations = one(conn, "SELECT count(*) AS n FROM credit_allocation")["n"]

    result = coupons.redeem(plain, user_id, "CODE", datetime.now(UTC), USD_PER_CREDIT)

    assert isinstance(result, Refused)
    assert result.reason == case
    assert balance_of(conn, user_id) == before
    assert one(conn, "SELECT count(*) AS n FROM credit_allocation")["n"] == allocations
    failed = conn.execute(
        "SELECT failure_reason FROM coupon_redemption "
        "WHERE user_id = %s AND redemption_status = 'failed'",
        (user_id,),
    ).fetchall()
    assert failed == ([] if case == "unknown_coupon" else [{"failure_reason": case}])
    assert_chain(conn, user_id)
    assert_books_clean(plain)


def test_concurrent_redemptions_never_exceed_the_total_limit(
    conn: Conn, migrated_db: str, plain: psycopg.Connection[Any]
) -> None:
    coupon_id = create_coupon(conn, "FIRST3", max_total_uses=3)
    users = [create_user(conn) for _ in range(8)]
    start = threading.Barrier(len(users))
    results: dict[uuid.UUID, coupons.Redeemed | Refused] = {}

    def redeem(user_id: uuid.UUID) -> None:
        with psycopg.connect(migrated_db, autocommit=True) as own:
            start.wait(timeout=30)
            results[user_id] = coupons.redeem(
                own, user_id, "FIRST3", datetime.now(UTC), USD_PER_CREDIT
            )

    threads = [threading.Thread(target=redeem, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == len(users)

    redeemed = [u for u, r in results.items() if isinstance(r, coupons.Redeemed)]
    refused = {r.reason for r in results.values() if isinstance(r, Refused)}
    assert len(redeemed) == 3
    assert refused == {coupons.Refusal.TOTAL_LIMIT_REACHED}
    limits = one(
        conn, "SELECT total_uses, unique_users FROM coupon_usage_limit WHERE coupon_id = %s",
        (coupon_id,),
    )  # fmt: skip
    assert limits == {"total_uses": 3, "unique_users": 3}
    assert sorted(balance_of(conn, u) for u in users) == [0] * 5 + [20000] * 3
    assert_books_clean(plain)


# -- CLI ---------------------------------------------------------------------------------


def run_cli(db: str, *args: str) -> Any:
    return CliRunner().invoke(main, list(args), env={"DATABASE_URL": db})


def test_cli_subscribe_upgrade_redeem(
    conn: Conn, migrated_db: str, plain: psycopg.Connection[Any]
) -> None:
    user_id = create_user(conn)
    create_coupon(conn, "REFER20")

    subscribed = run_cli(migrated_db, "credits", "subscribe", str(user_id), "--tier", "pro")
    assert subscribed.exit_code == 0, subscribed.output
    assert "balance 0 -> 20000" in subscribed.output
    subscription_id = one(
        conn, "SELECT id FROM subscription_monetization WHERE user_id = %s", (user_id,)
    )["id"]
    upgraded = run_cli(migrated_db, "credits", "upgrade", str(subscription_id), "--to", "pro_max")
    assert upgraded.exit_code == 0, upgraded.output
    assert upgraded.output.startswith("upgraded pro -> pro_max: ")
    repeated = run_cli(migrated_db, "credits", "upgrade", str(subscription_id), "--to", "pro_max")
    assert repeated.exit_code == 0 and repeated.output.startswith("already upgraded to pro_max")
    redeemed = run_cli(migrated_db, "credits", "redeem", str(user_id), "REFER20")
    assert redeemed.exit_code == 0, redeemed.output
    assert "20000 credits" in redeemed.output
    days = one(
        conn, "SELECT days_remaining FROM proration_event WHERE subscription_id = %s",
        (subscription_id,),
    )["days_remaining"]  # fmt: skip
    assert days in (29, 30)  # 29 only if UTC midnight passed between the two commands
    assert balance_of(conn, user_id) == 20000 + 50000 * days // 30 + 20000
    assert_books_clean(plain)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["subscribe", "{user}", "--tier", "gold"], "Error: unknown_tier: 'gold' (one of free, "),
        (["subscribe", "{user}", "--tier", "enterprise_pro"], "Error: plan_required: "),
        (["subscribe", "{user}", "--tier", "pro", "--price", "5"], "Error: plan_required: "),
        (["upgrade", "{sub}", "--to", "platinum"], "Error: unknown_tier: 'platinum'"),
        (["upgrade", "{sub}", "--to", "pro_max"], "Error: refused: unknown_subscription: "),
        (["redeem", "{user}", "NOPE"], "Error: refused: unknown_coupon: no coupon 'NOPE'"),
    ],
)
def test_cli_bad_arguments_are_one_line_errors(
    conn: Conn, migrated_db: str, args: list[str], message: str
) -> None:
    user_id = create_user(conn)
    filled = [a.format(user=user_id, sub=uuid.uuid4()) for a in args]

    result = run_cli(migrated_db, "credits", *filled)

    assert result.exit_code != 0
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert result.output.startswith(message), result.output
    assert one(conn, "SELECT count(*) AS n FROM subscription_monetization")["n"] == 0


# -- Test 4 ------------------------------------------------------------------------------


def test_api_request_deducts_credits_priced_from_the_price_table(
    conn: Conn, plain: psycopg.Connection[Any]
) -> None:
    user_id = create_user(conn)
    subscription_id = create_pro_subscription(conn, user_id)
    grant(plain, Grant(user_id, 1000, "subscription", subscription_id=subscription_id))
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


def test_byok_user_is_not_charged(conn: Conn, plain: psycopg.Connection[Any]) -> None:
    user_id = create_user(conn)
    conn.execute(
        """
        INSERT INTO perpetual_license (user_id, license_key, purchase_price_usd,
            purchased_version, eligible_until_version, max_activations, status)
        VALUES (%s, %s, 199.00, '1.0.0', '1.99.99', 3, 'active')
        """,
        (user_id, f"REPHLO-TEST-{user_id}"),
    )
    grant(plain, Grant(user_id, 1000, "bonus"))
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
    conn: Conn, plain: psycopg.Connection[Any]
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
        grant(plain, Grant(owner, 1000, "subscription", subscription_id=subscription_id))
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
