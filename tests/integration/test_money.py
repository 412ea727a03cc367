"""Prices, margins, expiry, reversal and the CLI around them, against a real PostgreSQL.

Usage is booked through `books.book_batch` (the worker's own write path) without Kafka.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from pipeline.books.reference import ReferenceCache
from pipeline.books.transaction import book_batch
from pipeline.cli import main
from pipeline.core.events import decode
from pipeline.money.catalog import load_litellm
from pipeline.money.credits import Grant, grant
from pipeline.money.margins import MarginError, approve, propose
from pipeline.money.movements import expire, reverse
from pipeline.money.prices import PriceError, import_litellm, set_price
from pipeline.money.reconcile import reconcile
from pipeline.schema import seed
from tests.integration.pipeline_harness import make_event

pytestmark = pytest.mark.integration

CATALOG = Path(__file__).resolve().parents[2] / "data/litellm-model-prices-1.110.2.json"
ADMIN = seed.ADMIN_USER_ID
D = Decimal
T1 = datetime(2025, 3, 1, tzinfo=UTC)
T2 = datetime(2025, 4, 1, tzinfo=UTC)


@pytest.fixture
def db(seeded_db: str) -> str:
    return seeded_db


@pytest.fixture
def catalog() -> Path:
    assert CATALOG.is_file(), f"the price catalog is missing: {CATALOG}"
    return CATALOG


def run_cli(db: str, *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env={"DATABASE_URL": db})


def new_user(db: str, credits: int = 0, expires_at: datetime | None = None) -> uuid.UUID:
    with psycopg.connect(db) as conn:
        user = conn.execute(
            "INSERT INTO users (email) VALUES (%s) RETURNING id", (f"{uuid.uuid4()}@t.example",)
        ).fetchone()[0]
        conn.execute(
            """
            INSERT INTO subscription_monetization (user_id, tier, billing_cycle, status,
                base_price_usd, monthly_credit_allocation, current_period_start,
                current_period_end)
            VALUES (%s, 'pro', 'monthly', 'active', 19, 20000, %s, %s)
            """,
            (user, datetime(2024, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(days=30)),
        )
        conn.commit()
        if credits:
            grant(conn, Grant(user, credits, "bonus", expires_at))
    return uuid.UUID(str(user))


def book(db: str, *events: dict[str, Any], reference: ReferenceCache | None = None) -> None:
    async def go() -> None:
        async def nothing(plan: Any) -> None:
            return None

        now = datetime.now(UTC)
        decoded = [decode(json.dumps(e).encode(), now, timedelta(minutes=5)) for e in events]
        async with await psycopg.AsyncConnection.connect(db) as conn:
            await book_batch(conn, decoded, D("0.001"), 0, nothing, reference=reference)

    asyncio.run(go())


def rows(db: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(db) as conn:
        return conn.execute(query, params).fetchall()


def balance(db: str, user: uuid.UUID) -> int:
    return int(rows(db, "SELECT amount FROM user_credit_balance WHERE user_id = %s", user)[0][0])


def openai_prices(db: str, model: str) -> list[tuple[Any, ...]]:
    return rows(
        db,
        """
        SELECT input_price_per_1k, output_price_per_1k, effective_from, effective_until,
               previous_price_input, previous_price_output, price_change_percent_input,
               price_change_percent_output, detected_at IS NOT NULL
        FROM model_provider_pricing m JOIN providers p ON p.id = m.provider_id
        WHERE p.name = 'OpenAI' AND m.model_name = %s ORDER BY effective_from
        """,
        model,
    )


def price_count(db: str) -> int:
    return int(rows(db, "SELECT count(*) FROM model_provider_pricing")[0][0])


def test_litellm_import_twice_adds_nothing(db: str, catalog: Path) -> None:
    with psycopg.connect(db) as conn:
        first = import_litellm(conn, catalog, T1)
    parsed = load_litellm(catalog)  # the pure parse, counted on its own
    assert len(first.changes) + first.unchanged == len(parsed.entries) > 3000
    assert first.unchanged == 1  # the seed already has that price
    assert first.skipped == parsed.skipped
    assert first.skipped["not_chat_model"] > 1000 and first.skipped["missing_price"] > 0
    assert "mistral" in first.providers_created
    assert "OpenAI" not in first.providers_created
    # The seeded gpt-4o (0.005 / 0.015 since 2024-05-01) is replaced by the catalog's.
    old, new = openai_prices(db, "gpt-4o")
    assert old[:4] == (D("0.005"), D("0.015"), datetime(2024, 5, 1, tzinfo=UTC), T1)
    assert new[:8] == (D("0.0025"), D("0.01"), T1, None, D("0.005"), D("0.015"), D("-50.00"),
                       D("-33.33"))  # fmt: skip
    assert new[8]
    azure = rows(
        db,
        """
        SELECT m.vendor_model_id FROM model_provider_pricing m JOIN providers p ON p.id = m.provider_id
        WHERE p.name = 'Azure OpenAI' AND m.model_name = 'gpt-4o'
        """,
    )
    assert azure == [("azure/gpt-4o",)]
    count = price_count(db)
    providers = rows(db, "SELECT count(*) FROM providers")

    with psycopg.connect(db) as conn:
        again = import_litellm(conn, catalog, T2)
    assert again.changes == ()
    assert again.unchanged == len(first.changes) + first.unchanged
    assert again.providers_created == ()
    assert price_count(db) == count
    assert rows(db, "SELECT count(*) FROM providers") == providers


def test_change_detection_between_catalog_versions(db: str, catalog: Path, tmp_path: Path) -> None:
    data = json.loads(catalog.read_text())
    data["gpt-4o"]["input_cost_per_token"] = 5e-06
    del data["gpt-4o"]["cache_read_input_token_cost"]
    data["my-new-chat-model"] = {
        "litellm_provider": "openai", "mode": "chat",
        "input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06,
    }  # fmt: skip
    edited = tmp_path / "prices-v2.json"
    edited.write_text(json.dumps(data))

    runner_first = run_cli(db, "prices", "import", "--litellm", str(catalog),
                           "--effective-from", T1.isoformat())  # fmt: skip
    assert runner_first.exit_code == 0, runner_first.output
    result = run_cli(db, "prices", "import", "--litellm", str(edited),
                     "--effective-from", "2025-04-01T00:00:00Z")  # fmt: skip
    assert result.exit_code == 0, result.output
    changed = [line for line in result.output.splitlines() if line.startswith("OpenAI ")]
    assert len(changed) == 2
    assert changed[0].startswith("OpenAI gpt-4o: in 0.0025, out 0.01 -> in 0.005, out 0.01")
    assert changed[0].endswith("(100.00% / 0.00%)")
    assert changed[1] == "OpenAI my-new-chat-model: new price in 0.001, out 0.002"
    assert "1 new, 1 changed" in result.output
    *_, v1, v2 = openai_prices(db, "gpt-4o")
    assert v1[2:4] == (T1, T2)
    assert v2[:8] == (D("0.005"), D("0.01"), T2, None, D("0.0025"), D("0.01"), D("100.00"),
                      D("0.00"))  # fmt: skip
    hit = rows(
        db,
        """
        SELECT cache_hit_price_per_1k FROM model_provider_pricing m
        JOIN providers p ON p.id = m.provider_id
        WHERE p.name = 'OpenAI' AND model_name = 'gpt-4o' AND effective_until IS NULL
        """,
    )
    assert hit == [(None,)]


def test_prices_set_closes_the_previous_row(db: str) -> None:
    args = ["prices", "set", "openai", "gpt-4-turbo", "--input", "0.012", "--output", "0.03",
            "--cache-hit", "0.006", "--effective-from", "2025-06-01T00:00:00Z"]  # fmt: skip
    result = run_cli(db, *args)
    assert result.exit_code == 0, result.output
    assert "in 0.01, out 0.03 -> in 0.012, out 0.03 (20.00% / 0.00%)" in result.output
    old, new = openai_prices(db, "gpt-4-turbo")
    june = datetime(2025, 6, 1, tzinfo=UTC)
    assert old[3] == june
    assert new[:8] == (D("0.012"), D("0.03"), june, None, D("0.01"), D("0.03"), D("20.00"),
                       D("0.00"))  # fmt: skip

    again = run_cli(db, *args[:-1], "2025-07-01T00:00:00Z")
    assert again.exit_code == 0, again.output
    assert "unchanged" in again.output
    assert len(openai_prices(db, "gpt-4-turbo")) == 2

    with psycopg.connect(db) as conn, pytest.raises(PriceError, match="must start later"):
        set_price(conn, "OpenAI", "gpt-4-turbo", D("0.5"), D("1"), None, None, T1)
    with psycopg.connect(db) as conn, pytest.raises(PriceError, match="unknown provider"):
        set_price(conn, "nobody", "m", D("0.5"), D("1"), None, None, T1)


@pytest.mark.parametrize(
    "args",
    [
        ["prices", "set", "OpenAI", "m", "--input", "abc", "--output", "1",
         "--effective-from", "2025-01-01"],
        ["prices", "set", "OpenAI", "m", "--input", "1", "--output", "1",
         "--effective-from", "yesterday"],
        ["prices", "set", "OpenAI", "m", "--input", "1", "--output", "100",
         "--effective-from", "2025-01-01"],
        ["prices", "set", "Nobody", "m", "--input", "1", "--output", "1",
         "--effective-from", "2025-01-01"],
        ["margins", "approve", "not-a-uuid", "--by", str(ADMIN)],
        ["margins", "propose", "--scope", "tier", "--multiplier", "1.5", "--by", str(ADMIN),
         "--model", "gpt-4o", "--effective-from", "2025-01-01", "--reason", "x"],
        ["credits", "reverse", str(uuid.uuid4()), "--reason", "oops", "--by", str(ADMIN)],
        ["report", "daily", "--from", "2025-02-01", "--to", "2025-01-01"],
        ["report", "daily", "--from", "2025-01-01", "--to", "2025-01-31", "--by", "nope"],
    ],
)  # fmt: skip
def test_bad_arguments_are_one_line_errors(db: str, args: list[str]) -> None:
    result = run_cli(db, *args)
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "Error:" in result.output


def test_margins_only_approved_configs_count(db: str) -> None:
    user = new_user(db, credits=100_000)
    with psycopg.connect(db) as conn:
        openai = conn.execute("SELECT id FROM providers WHERE name = 'OpenAI'").fetchone()[0]
        config, _ = propose(
            conn, "combination", D("3.00"), ADMIN, tier="pro", provider_id=openai,
            model_id="gpt-4o", effective_from=T1, reason="test", usd_per_credit=D("0.001"),
        )  # fmt: skip
        with pytest.raises(MarginError, match="needs two"):
            propose(conn, "combination", D("3"), ADMIN, tier="pro", effective_from=T1, reason="x",
                    usd_per_credit=D("0.001"))  # fmt: skip
        with pytest.raises(MarginError, match="positive"):
            propose(conn, "tier", D("0"), ADMIN, tier="pro", effective_from=T1, reason="x",
                    usd_per_credit=D("0.001"))  # fmt: skip
        tier_config, _ = propose(
            conn,
            "tier",
            D("1.80"),
            ADMIN,
            tier="pro",
            effective_from=T1,
            reason="review",
            usd_per_credit=D("0.001"),
        )
    # previous_multiplier / change_percent come from the approved pro config it replaces.
    assert rows(
        db, "SELECT previous_multiplier, change_percent FROM pricing_configs WHERE id = %s",
        tier_config,
    ) == [(D("1.50"), D("20.00"))]  # fmt: skip

    # Pending: gpt-4o (0.005/0.015 per 1k) for 1000 in + 2000 out = 0.035 USD x 1.5 = 53 credits.
    book(db, make_event(user, model="gpt-4o"))
    assert balance(db, user) == 100_000 - 53

    result = run_cli(db, "margins", "approve", str(config), "--by", str(uuid.uuid4()))
    assert result.exit_code == 1 and "no user" in result.output
    result = run_cli(db, "margins", "approve", str(config), "--by", str(ADMIN))
    assert result.exit_code == 0, result.output
    book(db, make_event(user, model="gpt-4o"))
    assert balance(db, user) == 100_000 - 53 - 105  # 0.035 x 3.00
    result = run_cli(db, "margins", "approve", str(config), "--by", str(ADMIN))
    assert result.exit_code == 1 and "not pending" in result.output

    with psycopg.connect(db) as conn:
        approval = approve(conn, tier_config, ADMIN)
    ended = rows(db, "SELECT effective_until FROM pricing_configs WHERE id = %s", approval.replaced)
    assert ended == [(T1,)]
    assert rows(
        db,
        """
        SELECT margin_multiplier FROM pricing_configs
        WHERE scope_type = 'tier' AND subscription_tier = 'pro' AND approval_status = 'approved'
          AND effective_until IS NULL
        """,
    ) == [(D("1.80"),)]
    with psycopg.connect(db) as conn:
        assert reconcile(conn) == []


def test_expiry_is_recorded_and_keeps_the_chain(db: str) -> None:
    past = datetime.now(UTC) - timedelta(days=1)
    user = new_user(db, credits=500, expires_at=past)
    with psycopg.connect(db) as conn:
        grant(conn, Grant(user, 300, "bonus", None))
        grant(conn, Grant(user, 200, "bonus", datetime.now(UTC) + timedelta(days=30)))
    result = run_cli(db, "credits", "expire")
    assert result.exit_code == 0, result.output
    assert "expired 500 credits" in result.output
    assert balance(db, user) == 500
    ledger = rows(
        db,
        """
        SELECT amount, balance_before, balance_after, reason FROM credit_deduction_ledger
        WHERE user_id = %s ORDER BY seq
        """,
        user,
    )
    assert ledger[-1] == (-500, 1000, 500, "expiration")
    assert rows(db, "SELECT sum(amount) FROM user_credit_source WHERE user_id = %s", user) == [
        (500,)
    ]
    with psycopg.connect(db) as conn:
        assert expire(conn, datetime.now(UTC)) == 0
        assert reconcile(conn) == []


def test_expiry_on_every_worker_at_once_expires_each_source_once(db: str) -> None:
    """Each worker runs the expiry timer (no leader): runs that overlap expire a source once."""
    past = datetime.now(UTC) - timedelta(hours=1)
    users = [new_user(db, credits=500, expires_at=past) for _ in range(20)]
    start = threading.Barrier(4)

    def worker() -> int:
        with psycopg.connect(db) as conn:
            start.wait()
            return expire(conn, datetime.now(UTC))

    with ThreadPoolExecutor(4) as pool:
        expired = list(pool.map(lambda _: worker(), range(4)))
    assert sum(expired) == 20 * 500
    assert rows(
        db,
        "SELECT count(*), sum(amount) FROM credit_deduction_ledger "
        "WHERE reason = 'expiration' AND user_id = ANY(%s)",
        users,
    ) == [(20, -20 * 500)]
    with psycopg.connect(db) as conn:
        assert reconcile(conn) == []


def test_reversal_is_idempotent_and_corrects_the_summaries(db: str) -> None:
    user = new_user(db, credits=1000)
    event = make_event(user, model="gpt-4o")
    other = make_event(user, model="gpt-4o")
    book(db, event, other)
    assert balance(db, user) == 1000 - 2 * 53
    request = uuid.UUID(event["request_id"])

    result = run_cli(db, "credits", "reverse", str(request), "--reason", "gateway error",
                     "--by", str(ADMIN))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "refunded 53 credits" in result.output
    assert balance(db, user) == 1000 - 53
    again = run_cli(db, "credits", "reverse", str(request), "--reason", "again",
                    "--by", str(ADMIN))  # fmt: skip
    assert again.exit_code == 0 and "already reversed" in again.output
    with psycopg.connect(db) as conn:
        assert not reverse(conn, request, "x", ADMIN).applied
    assert balance(db, user) == 1000 - 53

    assert rows(
        db,
        """
        SELECT status, reversed_by, reversal_reason, reversed_at IS NOT NULL
        FROM credit_deduction_ledger WHERE request_id = %s
        """,
        request,
    ) == [("reversed", ADMIN, "gateway error", True)]
    refunds = rows(
        db,
        """
        SELECT amount, balance_before, balance_after, request_id FROM credit_deduction_ledger
        WHERE user_id = %s AND reason = 'reversal'
        """,
        user,
    )
    assert refunds == [(53, 894, 947, None)]
    assert rows(
        db, "SELECT total_credits_deducted FROM token_usage_daily_summary WHERE user_id = %s", user
    ) == [(53,)]
    assert rows(
        db,
        "SELECT total_deductions, total_requests FROM credit_usage_daily_summary WHERE user_id = %s",
        user,
    ) == [(53, 2)]
    assert rows(
        db, "SELECT amount FROM user_credit_source WHERE user_id = %s AND source = 'reversal'",
        user,
    ) == [(53,)]  # fmt: skip
    with psycopg.connect(db) as conn:
        assert reconcile(conn) == []

    report = run_cli(db, "report", "daily", "--from", "2000-01-01", "--to", "2100-01-01",
                     "--user", str(user), "--format", "json")  # fmt: skip
    assert report.exit_code == 0, report.output
    (day,) = json.loads(report.output)
    assert (day["user_id"], day["requests"], day["credits_deducted"]) == (str(user), 2, 53)
    assert day["vendor_cost_usd"] == "0.07000000"
    by_model = run_cli(db, "report", "daily", "--from", "2000-01-01", "--to", "2100-01-01",
                       "--by", "model", "--format", "csv")  # fmt: skip
    assert by_model.exit_code == 0, by_model.output
    header, line = by_model.output.strip().splitlines()
    assert header.startswith("day,provider,model,requests")
    assert ",OpenAI,gpt-4o,2," in line
    table = run_cli(db, "report", "daily", "--from", "2000-01-01", "--to", "2100-01-01")
    assert table.exit_code == 0 and str(user) in table.output


def test_grant_idempotency_key_applies_once(db: str) -> None:
    user = new_user(db)
    with psycopg.connect(db) as conn:
        first = grant(conn, Grant(user, 700, "coupon", idempotency_key="coupon-42"))
        second = grant(conn, Grant(user, 700, "coupon", idempotency_key="coupon-42"))
    assert first.applied and not second.applied
    assert second.allocation_id == first.allocation_id
    assert balance(db, user) == 700
    assert rows(db, "SELECT count(*) FROM credit_allocation WHERE user_id = %s", user) == [(1,)]


def test_reconcile_catches_tampering(db: str, kafka_bootstrap: str) -> None:
    user = new_user(db, credits=1000)
    book(db, make_event(user, model="gpt-4o"))
    with psycopg.connect(db) as conn:
        assert reconcile(conn) == []
        conn.execute(
            "UPDATE credit_usage_daily_summary SET total_deductions = total_deductions + 7 "
            "WHERE user_id = %s",
            (user,),
        )
        conn.execute(
            "UPDATE user_credit_balance SET amount = amount + 1000 WHERE user_id = %s", (user,)
        )
        conn.commit()
        found = {(v.check, v.user_id) for v in reconcile(conn)}
    assert ("credit_summary_equals_ledger", user) in found
    assert ("balance_equals_ledger_sum", user) in found

    env = os.environ | {"DATABASE_URL": db, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "reconcile"],
        env=env, capture_output=True, text=True, timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "credit_summary_equals_ledger" in proc.stdout
    assert "balance_equals_ledger_sum" in proc.stdout
    assert str(user) in proc.stdout
    assert "Traceback" not in proc.stderr


def test_cached_reference_data_prices_the_very_next_batch_after_a_change(db: str) -> None:
    user = new_user(db, credits=100_000)
    cache = ReferenceCache()
    first, second, third, fourth = (make_event(user) for _ in range(4))

    def charged(event: dict[str, Any]) -> tuple[Decimal, Decimal, int]:
        [row] = rows(
            db,
            "SELECT vendor_cost, margin_multiplier, credits_deducted FROM token_usage_ledger "
            "WHERE request_id = %s",
            event["request_id"],
        )
        return row

    book(db, first, reference=cache)
    book(db, second, reference=cache)
    assert cache.loads == 1  # nothing changed: the second batch used the cached rows
    assert charged(first) == charged(second) == (D("0.035"), D("1.50"), 53)

    with psycopg.connect(db) as conn:
        conn.execute(
            "UPDATE model_provider_pricing SET input_price_per_1k = 0.010 "
            "WHERE model_name = 'gpt-4o' AND provider_id = "
            "(SELECT id FROM providers WHERE api_type = 'openai')"
        )
    book(db, third, reference=cache)
    assert cache.loads == 2
    assert charged(third) == (D("0.040"), D("1.50"), 60)  # 1k x 0.010 + 2k x 0.015

    with psycopg.connect(db) as conn:
        conn.execute(
            "UPDATE pricing_configs SET margin_multiplier = 2.0 "
            "WHERE scope_type = 'tier' AND subscription_tier = 'pro'"
        )
    book(db, fourth, reference=cache)
    assert cache.loads == 3
    assert charged(fourth) == (D("0.040"), D("2.00"), 80)
