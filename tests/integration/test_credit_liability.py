"""`report credits` (issue 17, part 4): prepaid credits outstanding and overdraft exposure,
by source type and expiry, and per month granted, used, expired and reversed, tied to the
balances by granted - used - expired + reversed = outstanding - overdraft."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from pipeline.money.credits import Grant, grant
from pipeline.money.movements import expire, reverse
from tests.integration.pipeline_harness import make_event
from tests.integration.test_money import ADMIN, book, rows, run_cli

pytestmark = pytest.mark.integration


@pytest.fixture
def db(seeded_db: str) -> str:
    return seeded_db


def _user(db: str) -> uuid.UUID:
    with psycopg.connect(db) as conn:
        found = conn.execute(
            "INSERT INTO users (email) VALUES (%s) RETURNING id", (f"{uuid.uuid4()}@t.example",)
        ).fetchone()
    assert found is not None
    return uuid.UUID(str(found[0]))


def _report(db: str, *args: str) -> dict[str, Any]:
    done = run_cli(db, "report", "credits", "--format", "json", *args)
    assert done.exit_code == 0, done.output
    return dict(json.loads(done.output))


def _charged(db: str, user: uuid.UUID) -> int:
    return -int(rows(db, "SELECT coalesce(sum(amount), 0) FROM credit_deduction_ledger "
                         "WHERE user_id = %s AND request_id IS NOT NULL", user)[0][0])  # fmt: skip


def test_the_liability_ties_the_flows_to_the_balances(db: str) -> None:
    before = _report(db)
    assert before["reconciles"] is True
    now = datetime.now(UTC)
    spender, overdrawn, lapsed = _user(db), _user(db), _user(db)
    with psycopg.connect(db) as conn:
        grant(conn, Grant(spender, 1_000, "bonus", now + timedelta(days=5)))
        grant(conn, Grant(spender, 500, "admin_grant", None))
        grant(conn, Grant(overdrawn, 200, "subscription", now + timedelta(days=60)))
        grant(conn, Grant(lapsed, 100, "bonus", now + timedelta(seconds=1)))
    spent = [make_event(spender, input_tokens=20_000, output_tokens=1_000 * k) for k in range(3)]
    book(db, *spent, make_event(overdrawn, input_tokens=200_000, output_tokens=20_000))
    with psycopg.connect(db) as conn:
        refund = reverse(
            conn, uuid.UUID(spent[2]["request_id"]), "goodwill", ADMIN
        ).credits_refunded
        assert expire(conn, now + timedelta(seconds=2)) == 100
    used_spender, used_overdrawn = _charged(db, spender), _charged(db, overdrawn)
    assert 0 < used_spender < 1_000 and used_overdrawn > 200 and refund > 0

    after = _report(db)
    assert after["reconciles"] is True
    growth = {k: after["totals"][k] - before["totals"][k] for k in after["totals"]}
    assert growth == {"granted": 1_800, "used": used_spender + used_overdrawn, "expired": 100,
                      "reversed": refund, "other": 0}  # fmt: skip
    outstanding = before["outstanding_credits"] + 1_500 - used_spender + refund
    overdraft = before["overdraft_credits"] + used_overdrawn - 200
    assert (after["outstanding_credits"], after["overdraft_credits"]) == (outstanding, overdraft)
    assert after["outstanding_usd"] == str(Decimal("0.001") * outstanding)
    balances = rows(db, "SELECT coalesce(sum(amount) FILTER (WHERE amount > 0), 0), "
                        "coalesce(-sum(amount) FILTER (WHERE amount < 0), 0) "
                        "FROM user_credit_balance")[0]  # fmt: skip
    assert (int(balances[0]), int(balances[1])) == (outstanding, overdraft)
    # What the outstanding credits are made of (the overdrawn user's sources are spent).
    assert sum(after["by_source"].values()) == sum(after["by_expiry"].values()) == outstanding
    mine = {k: after["by_source"].get(k, 0) - before["by_source"].get(k, 0)
            for k in ("bonus", "admin_grant", "reversal")}  # fmt: skip
    assert mine == {"bonus": 1_000 - used_spender, "admin_grant": 500, "reversal": refund}
    soon = after["by_expiry"]["within_7_days"] - before["by_expiry"]["within_7_days"]
    assert soon == 1_000 - used_spender  # the bonus is spent first and expires in 5 days
    month = now.strftime("%Y-%m")
    assert [m["month"] for m in after["months"]][-1] == month

    past = _report(db, "--at", (now - timedelta(days=1)).isoformat())
    assert past["by_source"] == {} and past["reconciles"] is True
    assert past["outstanding_credits"] <= before["outstanding_credits"]
    table = run_cli(db, "report", "credits")
    assert table.exit_code == 0, table.output
    assert table.output.rstrip().endswith(": holds")
    assert f"outstanding: {outstanding:,} credits" in table.output
