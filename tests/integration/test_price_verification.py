"""Price verification (issue 17, part 2): an import or `prices set` that finds a price
unchanged verifies it; `prices stale` lists the prices in effect overdue for verification,
most used first; the worker's gauge counts them (`timers.count_stale_prices`)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from pipeline.money.prices import import_litellm, set_price
from pipeline.stream.timers import count_stale_prices
from tests.integration.test_money import CATALOG, rows, run_cli

pytestmark = pytest.mark.integration

D = Decimal
SINCE = datetime(2025, 1, 1, tzinfo=UTC)
AT = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


@pytest.fixture
def db(seeded_db: str) -> str:
    return seeded_db


def _price(db: str, model: str, input_usd: str = "0.001", since: datetime = SINCE) -> None:
    with psycopg.connect(db) as conn:
        set_price(conn, "OpenAI", model, D(input_usd), D("0.002"), None, None, since)


def _verified(db: str, model: str) -> list[datetime]:
    found = rows(
        db,
        "SELECT last_verified FROM model_provider_pricing WHERE model_name = %s "
        "ORDER BY effective_from",
        model,
    )
    return [r[0] for r in found]


def _backdate(db: str, model: str, verified: datetime, every_days: int = 7) -> None:
    with psycopg.connect(db) as conn:
        conn.execute(
            "UPDATE model_provider_pricing SET last_verified = %s, "
            "verification_frequency_days = %s WHERE model_name = %s",
            (verified, every_days, model),
        )


def _used(db: str, model: str, day: datetime, requests: int) -> None:
    with psycopg.connect(db) as conn:
        conn.execute(
            """
            INSERT INTO model_usage_daily_summary (summary_date, provider_id, model_id,
                                                   total_requests)
            SELECT %s, id, %s, %s FROM providers WHERE name = 'OpenAI'
            """,
            (day.date(), model, requests),
        )


def test_a_price_found_unchanged_is_verified_and_a_changed_one_is_a_new_row(db: str) -> None:
    model = f"verify-{uuid.uuid4().hex[:8]}"
    _price(db, model)
    long_ago = datetime(2025, 2, 1, tzinfo=UTC)
    _backdate(db, model, long_ago)
    before = datetime.now(UTC)
    _price(db, model, since=SINCE + timedelta(days=30))  # the same price again: verified
    [verified] = _verified(db, model)
    assert verified >= before - timedelta(seconds=1)
    _backdate(db, model, long_ago)
    _price(db, model, "0.003", since=SINCE + timedelta(days=60))  # a change: a new row
    old, new = _verified(db, model)
    assert old == long_ago  # the replaced price was not verified by its replacement
    assert new >= before - timedelta(seconds=1)


def test_a_catalog_import_verifies_every_price_it_finds_unchanged(db: str) -> None:
    with psycopg.connect(db) as conn:
        import_litellm(conn, CATALOG, SINCE)
        conn.execute("UPDATE model_provider_pricing SET last_verified = %s", (SINCE,))
    with psycopg.connect(db) as conn:
        again = import_litellm(conn, CATALOG, SINCE + timedelta(days=1))
    assert again.changes == () and again.unchanged > 3000
    # the catalog's prices are verified again; the seed's own models outside it are not
    stale = rows(
        db,
        "SELECT count(*) FROM model_provider_pricing WHERE is_active AND "
        "effective_until IS NULL AND last_verified = %s",
        SINCE,
    )[0][0]
    fresh = rows(
        db,
        "SELECT count(*) FROM model_provider_pricing WHERE last_verified > %s",
        SINCE + timedelta(days=1),
    )[0][0]
    assert fresh == again.unchanged
    assert stale < 20


def _gauge(db: str) -> int:
    async def count() -> int:
        async with AsyncConnectionPool(db, min_size=1, max_size=1, open=False) as pool:
            return await count_stale_prices(pool)

    return asyncio.run(count())


def test_prices_stale_lists_the_overdue_prices_in_effect_most_used_first(db: str) -> None:
    before = _gauge(db)
    tag = uuid.uuid4().hex[:6]
    overdue, also_overdue, not_due, replaced = (f"{n}-{tag}" for n in ("a", "b", "c", "d"))
    for model in (overdue, also_overdue, not_due, replaced):
        _price(db, model)
    _price(
        db, replaced, "0.005", since=AT - timedelta(days=3)
    )  # the old row is no longer in effect
    _backdate(db, overdue, AT - timedelta(days=10))  # due 3 days ago
    _backdate(db, also_overdue, AT - timedelta(days=8))  # due 1 day ago
    _backdate(db, not_due, AT - timedelta(days=10), every_days=30)
    with psycopg.connect(db) as conn:  # only the replaced row is overdue
        conn.execute(
            "UPDATE model_provider_pricing SET last_verified = %s WHERE model_name = %s "
            "AND effective_until IS NOT NULL",
            (AT - timedelta(days=40), replaced),
        )
    _used(db, overdue, AT, 2)
    _used(db, overdue, AT - timedelta(days=9), 100)  # before the last 7 days: not counted
    _used(db, also_overdue, AT - timedelta(days=1), 5)
    _used(db, not_due, AT, 50)

    done = run_cli(db, "prices", "stale", "--at", AT.isoformat(), "--format", "json")
    assert done.exit_code == 0, done.output
    ours = [r for r in json.loads(done.output) if r["model"].endswith(tag)]
    assert ours == [
        {
            "provider": "OpenAI", "model": also_overdue,
            "last_verified": str(AT - timedelta(days=8)), "verify_every_days": 7,
            "due": str(AT - timedelta(days=1)), "requests_last_7_days": 5,
        },
        {
            "provider": "OpenAI", "model": overdue,
            "last_verified": str(AT - timedelta(days=10)), "verify_every_days": 7,
            "due": str(AT - timedelta(days=3)), "requests_last_7_days": 2,
        },
    ]  # fmt: skip
    # The worker's gauge counts the prices in effect overdue now: by now (after AT) the one
    # verified every 30 days is overdue too; the replaced model's price in effect is fresh.
    assert _gauge(db) == before + 3

    # Twenty days earlier the replaced price was the one in effect, and already overdue.
    earlier = AT - timedelta(days=20)
    done = run_cli(db, "prices", "stale", "--at", earlier.isoformat(), "--format", "csv")
    assert done.exit_code == 0, done.output
    header, *lines = done.output.splitlines()
    assert header == "provider,model,last_verified,verify_every_days,due,requests_last_7_days"
    assert [line for line in lines if tag in line] == [
        f"OpenAI,{replaced},{AT - timedelta(days=40)},7,{AT - timedelta(days=33)},0"
    ]
    before_any = run_cli(db, "prices", "stale", "--at", "2024-12-01T00:00:00Z")
    assert before_any.output == "no price is overdue for verification\n"


def test_prices_stale_refuses_a_bad_instant_in_one_line(db: str) -> None:
    done = run_cli(db, "prices", "stale", "--at", "yesterday")
    assert done.exit_code == 2
    assert "Traceback" not in done.output and "--at" in done.output
