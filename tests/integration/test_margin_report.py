"""`report margins` (issue 17, part 3): realized gross margin per tier, model and pricing
config against the monitored configs' targets, read as finance_reader. The expected figures
are summed here from the ledger's own rows."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from pipeline.money.margins import approve, propose
from pipeline.money.movements import reverse
from pipeline.schema import logins
from tests.integration.pipeline_harness import make_event
from tests.integration.test_money import ADMIN, book, new_user, rows, run_cli

pytestmark = pytest.mark.integration

D = Decimal
DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)


@pytest.fixture
def db(seeded_db: str) -> str:
    return seeded_db


def _percent(part: Decimal, whole: Decimal) -> str:
    return str((100 * part / whole).quantize(D("0.01")))


def test_margins_by_tier_model_and_config_against_their_targets(db: str) -> None:
    with psycopg.connect(db) as conn:
        openai = conn.execute("SELECT id FROM providers WHERE name = 'OpenAI'").fetchone()[0]
        cheap, _ = propose(
            conn, "model", D("1.10"), ADMIN, provider_id=openai, model_id="gpt-4-turbo",
            effective_from=DAY - timedelta(days=30), reason="test", usd_per_credit=D("0.001"),
        )  # fmt: skip
        conn.execute(
            "UPDATE pricing_configs SET target_gross_margin_percent = 20 WHERE id = %s", (cheap,)
        )
        approve(conn, cheap, ADMIN)
    pro = new_user(db, credits=10_000_000)
    at = DAY + timedelta(hours=12)
    events = [make_event(pro, input_tokens=10_000 * (k + 1), output_tokens=1_234 + k,
                         started_at=at) for k in range(3)]  # fmt: skip
    events += [make_event(pro, model="gpt-4-turbo", input_tokens=20_000, output_tokens=5_000 + k,
                          started_at=at) for k in range(2)]  # fmt: skip
    events.append(make_event(pro, started_at=DAY + timedelta(days=1, hours=1)))  # after --to
    book(db, *events)
    with psycopg.connect(db) as conn:  # a refund: its request is billed nothing
        reverse(conn, uuid.UUID(events[0]["request_id"]), "goodwill", ADMIN)
    ledger = {
        r[0]: (r[1], r[2], r[3])
        for r in rows(
            db,
            "SELECT request_id::text, model_id, vendor_cost, credit_value_usd "
            "FROM token_usage_ledger WHERE user_id = %s AND request_started_at < %s",
            pro,
            DAY + timedelta(days=1),
        )
    }
    assert len(ledger) == 5
    billed = {
        rid: (D(0) if rid == events[0]["request_id"] else v) for rid, (_, _, v) in ledger.items()
    }

    def sums(model: str | None) -> tuple[int, Decimal, Decimal]:
        ids = [rid for rid, (m, _, _) in ledger.items() if model in (None, m)]
        return len(ids), sum(ledger[i][1] for i in ids), sum(billed[i] for i in ids)

    # As finance reads it: its own login.
    with psycopg.connect(db) as conn:
        finance = logins.login_url(conn, db, logins.FINANCE_LOGIN, "finance_reader")
    day = DAY.date().isoformat()

    def report(by: str) -> list[dict[str, Any]]:
        done = run_cli(finance, "report", "margins", "--from", day, "--to", day, "--by", by,
                       "--format", "json")  # fmt: skip
        assert done.exit_code == 0, done.output
        return list(json.loads(done.output))

    n, cost, value = sums(None)
    [pro_row] = report("tier")
    assert pro_row == {
        "tier": "pro", "requests": n, "vendor_cost_usd": str(cost), "billed_usd": str(value),
        "gross_margin_usd": str(value - cost), "gross_margin_percent": _percent(value - cost, value),
        "target_percent": "33.33",
        "gap_points": str(D(_percent(value - cost, value)) - D("33.33")),
        "below_target": D(_percent(value - cost, value)) < D("33.33"),
    }  # fmt: skip

    by_model = {r["model"]: r for r in report("model")}
    n, cost, value = sums("gpt-4-turbo")
    realized = D(_percent(value - cost, value))
    assert by_model["gpt-4-turbo"]["requests"] == n == 2
    assert by_model["gpt-4-turbo"]["target_percent"] == "20.00"  # its own model config
    assert by_model["gpt-4-turbo"]["gross_margin_percent"] == str(realized)
    assert realized < 20 and by_model["gpt-4-turbo"]["below_target"] is True
    assert by_model["gpt-4o"]["target_percent"] is None  # no gpt-4o config of its own
    assert by_model["gpt-4o"]["billed_usd"] == str(sums("gpt-4o")[2])

    by_config = {r["scope"]: r for r in report("config")}
    assert by_config["model"]["config"] == str(cheap)
    assert (by_config["model"]["requests"], by_config["model"]["below_target"]) == (2, True)
    assert (by_config["tier"]["tier"], by_config["tier"]["requests"]) == ("pro", 3)
    assert by_config["tier"]["multiplier"] == "1.50"

    table = run_cli(finance, "report", "margins", "--from", day, "--to", day)
    assert table.exit_code == 0 and "below_target" in table.output.splitlines()[0]
    backwards = run_cli(finance, "report", "margins", "--from", day, "--to", "2020-01-01")
    assert backwards.exit_code == 1 and "before" in backwards.output
