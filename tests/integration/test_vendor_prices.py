"""Prices as vendors bill them, end to end: the LiteLLM map imported into real books, events
through the real topic and worker, each booked at the cost computed here by hand from the
map's own numbers (issue 14)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pipeline.money.prices import import_litellm
from tests.integration.pipeline_harness import Harness, make_event
from tests.integration.test_pipeline import assert_books_clean, new_user

pytestmark = pytest.mark.integration

CATALOG = Path(__file__).resolve().parents[2] / "data" / "litellm-model-prices-1.110.2.json"
D = Decimal


@pytest.fixture(scope="module")
def harness(new_books: Callable[[], str], kafka_bootstrap: str, tmp_path_factory: Any) -> Any:
    h = Harness(new_books(), kafka_bootstrap)
    with psycopg.connect(h.database_url) as conn:
        import_litellm(conn, CATALOG, datetime.now(UTC) - timedelta(hours=1))
    h.start_worker(tmp_path_factory.mktemp("worker"))
    yield h
    h.stop_worker()


GPT = {"provider": "openai", "model": "gpt-5.4"}
SONNET = {"provider": "anthropic", "model": "claude-sonnet-4-5"}
QWEN = {"provider": "dashscope", "model": "qwen-turbo"}
CASES: dict[str, tuple[dict[str, Any], Decimal]] = {
    # Past 272k prompt tokens (cached ones count) every part costs the long-context price:
    # 200,000 x 5e-06 + 100,000 cached x 5e-07 + 2,000 out x 2.25e-05.
    "long_prompt": ({**GPT, "input_tokens": 300_000, "cached_input_tokens": 100_000,
                     "output_tokens": 2000}, D("1.095")),
    # The batch tier's own prices: 10,000 x 1.25e-06 + 1,000 x 7.5e-06.
    "batch": ({**GPT, "input_tokens": 10_000, "output_tokens": 1000, "service_tier": "batch"},
              D("0.02")),
    # Priority: 1,000 x 5e-06 + 100 x 3e-05.
    "priority": ({**GPT, "input_tokens": 1000, "output_tokens": 100,
                  "service_tier": "priority"}, D("0.008")),
    # One-hour cache writes at 2x input, five-minute ones at 1.25x: 6,000 x 3e-06 +
    # 3,000 x 3.75e-06 + 1,000 x 6e-06 + 100 out x 1.5e-05.
    "one_hour_write": ({**SONNET, "input_tokens": 10_000, "cache_write_tokens": 4000,
                        "cache_write_1h_tokens": 1000, "output_tokens": 100}, D("0.03675")),
    # Reasoning has its own price: 1,000 x 5e-08 + 1,000 text out x 2e-07 + 2,000 x 5e-07.
    "reasoning": ({**QWEN, "input_tokens": 1000, "output_tokens": 3000,
                   "reasoning_tokens": 2000}, D("0.00125")),
}  # fmt: skip


def test_each_request_books_at_the_vendors_exact_price(harness: Harness) -> None:
    user = new_user(harness, credits=100_000)
    events = {name: make_event(user, **fields) for name, (fields, _) in CASES.items()}
    plain = make_event(user, **GPT, input_tokens=1000, output_tokens=100)
    harness.publish([*events.values(), plain])
    harness.wait_booked([e["request_id"] for e in [*events.values(), plain]])
    for name, (_, expected) in CASES.items():
        [(cost, credits, breakdown)] = harness.query(
            "SELECT vendor_cost, credits_deducted, price_breakdown FROM token_usage_ledger "
            "WHERE request_id = %s",
            events[name]["request_id"],
        )
        assert cost == expected, name
        assert credits == int((expected * D("1.5") / D("0.001")).to_integral_value("ROUND_CEILING"))
        assert breakdown is not None and D(breakdown["usd"]) == expected, name
        assert sum(D(line["usd"]) for line in breakdown["lines"]) == expected, name
    [(plain_cost, plain_breakdown)] = harness.query(
        "SELECT vendor_cost, price_breakdown FROM token_usage_ledger WHERE request_id = %s",
        plain["request_id"],
    )
    assert (plain_cost, plain_breakdown) == (D("0.004"), None)  # 1000 x 2.5e-06 + 100 x 1.5e-05
    [(long_lines,)] = harness.query(
        "SELECT price_breakdown->'lines' FROM token_usage_ledger WHERE request_id = %s",
        events["long_prompt"]["request_id"],
    )
    assert {(x["part"], x["above_tokens"]) for x in long_lines} == {
        ("input", 272_000),
        ("cache_read", 272_000),
        ("output", 272_000),
    }
    assert_books_clean(harness, user)
