"""Margin-change forecasts (issue 17, part 1): `margins propose` charges the last 30 days
of requests it would price again at the proposed multiplier, stores the change and prints
it with the number of requests; `margins show` and `margins list --pending` read it. The
expected figures are re-priced here from the ledger's own vendor costs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any
from uuid import UUID

import psycopg
import pytest

from pipeline.money.margin_forecast import Forecast
from pipeline.money.margins import approve, propose
from tests.integration.pipeline_harness import make_event
from tests.integration.test_money import ADMIN, book, new_user, rows, run_cli

pytestmark = pytest.mark.integration

D = Decimal
USD_PER_CREDIT = D("0.001")  # the default USD_PER_CREDIT, as `book` charges
NOW = datetime.now(UTC)


@pytest.fixture
def db(seeded_db: str) -> str:
    return seeded_db


def _ledger(db: str, model: str) -> list[tuple[Decimal, int]]:
    """(vendor cost, credits charged) of the last 30 days' charged rows of `model`."""
    found = rows(
        db,
        "SELECT vendor_cost, credits_deducted FROM token_usage_ledger WHERE model_id = %s "
        "AND request_started_at >= %s",
        model,
        NOW - timedelta(days=30),
    )
    return [(r[0], int(r[1])) for r in found]


def _repriced(ledger: list[tuple[Decimal, int]], multiplier: Decimal) -> tuple[int, int, Decimal]:
    """(charged, charged at `multiplier`, the change in USD to the cent), done by hand."""
    charged = sum(c for _, c in ledger)
    again = sum(
        int((cost * multiplier / USD_PER_CREDIT).to_integral_value(rounding=ROUND_CEILING))
        for cost, _ in ledger
    )
    return charged, again, ((again - charged) * USD_PER_CREDIT).quantize(D("0.01"))


def _propose(
    db: str,
    scope: str,
    multiplier: str,
    since: datetime = NOW + timedelta(days=1),
    **scope_fields: Any,
) -> tuple[UUID, Forecast]:
    """A pending proposal at `multiplier` from `since` (tomorrow), forecast as of NOW."""
    with psycopg.connect(db) as conn:
        if "model_id" in scope_fields:
            scope_fields["provider_id"] = conn.execute(
                "SELECT id FROM providers WHERE name = 'OpenAI'"
            ).fetchone()[0]
        return propose(
            conn, scope, D(multiplier), ADMIN, effective_from=since,
            reason="test", usd_per_credit=USD_PER_CREDIT, now=NOW, **scope_fields,
        )  # fmt: skip


def _book_traffic(db: str) -> None:
    pro = new_user(db, credits=10_000_000)
    events: list[dict[str, Any]] = []
    for k in range(4):  # gpt-4o, in the window
        events.append(make_event(pro, input_tokens=10_000 + 777 * k, output_tokens=3_001 * k + 1,
                                 started_at=NOW - timedelta(days=k + 1)))  # fmt: skip
    events.append(make_event(pro, model="gpt-4-turbo", input_tokens=5_000, output_tokens=999,
                             started_at=NOW - timedelta(days=2)))  # fmt: skip
    # before the 30 days: never counted
    events.append(make_event(pro, input_tokens=50_000, output_tokens=50_000,
                             started_at=NOW - timedelta(days=40)))  # fmt: skip
    # a call that failed before any token costs nothing: no request the margin prices
    events.append(make_event(pro, status="error", error_message="upstream 500",
                             input_tokens=0, output_tokens=0,
                             started_at=NOW - timedelta(days=1)))  # fmt: skip
    book(db, *events)


def test_a_tier_proposal_reprices_the_requests_no_more_specific_config_prices(db: str) -> None:
    _book_traffic(db)
    # gpt-4-turbo has a model config of its own: a pro tier proposal cannot touch it
    model_config, _ = _propose(
        db, "model", "1.70", NOW - timedelta(days=60), model_id="gpt-4-turbo"
    )
    with psycopg.connect(db) as conn:
        approve(conn, model_config, ADMIN)
    proposal, forecast = _propose(db, "tier", "2.50", tier="pro")
    ledger = [row for row in _ledger(db, "gpt-4o") if row[0] > 0]
    assert len(ledger) == 4 and len(_ledger(db, "gpt-4o")) == 5  # the error row costs nothing
    charged, again, change = _repriced(ledger, D("2.50"))
    assert (forecast.requests, forecast.charged_credits, forecast.proposed_credits) == (
        4, charged, again
    )  # fmt: skip
    assert forecast.revenue_impact_usd == forecast.margin_change_usd == change > 0
    stored = rows(
        db,
        "SELECT expected_revenue_impact, expected_margin_change_dollars, approval_status "
        "FROM pricing_configs WHERE id = %s",
        proposal,
    )
    assert stored == [(change, change, "pending")]


def test_a_model_proposal_below_the_tier_margin_forecasts_a_loss(db: str) -> None:
    _book_traffic(db)
    _, forecast = _propose(db, "model", "1.10", model_id="gpt-4-turbo")
    charged, again, change = _repriced(_ledger(db, "gpt-4-turbo"), D("1.10"))
    assert (forecast.requests, forecast.charged_credits, forecast.proposed_credits) == (
        1, charged, again
    )  # fmt: skip
    assert forecast.revenue_impact_usd == change < 0


def test_the_cli_prints_stores_shows_and_lists_the_forecast(db: str) -> None:
    _book_traffic(db)
    done = run_cli(
        db, "margins", "propose", "--scope", "tier", "--tier", "pro", "--multiplier", "3.00",
        "--by", str(ADMIN), "--effective-from", (NOW + timedelta(days=1)).isoformat(),
        "--reason", "review",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    charged, again, change = _repriced(
        [r for r in _ledger(db, "gpt-4o") + _ledger(db, "gpt-4-turbo") if r[0] > 0], D("3.00")
    )
    config = UUID(done.output.split()[1])
    assert done.output == (
        f"proposed {config} (pending approval): over the last 30 days, 5 requests in its scope "
        f"would have been charged {again:,} credits instead of {charged:,}: revenue "
        f"+${change:,.2f}, gross margin +${change:,.2f}\n"
    )
    shown = run_cli(db, "margins", "show", str(config), "--format", "json")
    assert shown.exit_code == 0, shown.output
    [record] = json.loads(shown.output)
    assert (
        record["expected_revenue_impact"] == record["expected_margin_change_dollars"] == str(change)
    )
    assert (record["status"], record["scope"], record["tier"], record["multiplier"]) == (
        "pending", "tier", "pro", "3.00"
    )  # fmt: skip
    table = run_cli(db, "margins", "show", str(config))
    assert ["expected_revenue_impact", str(change)] in [
        x.split() for x in table.output.splitlines()
    ]
    listed = run_cli(db, "margins", "list", "--pending", "--format", "csv")
    assert listed.exit_code == 0, listed.output
    [line] = [x for x in listed.output.splitlines() if x.startswith(str(config))]
    assert f",{change},{change}," in line
    missing = run_cli(db, "margins", "show", "00000000-0000-4000-8000-000000000000")
    assert missing.exit_code == 1 and "no pricing config" in missing.output
    assert "Traceback" not in missing.output
