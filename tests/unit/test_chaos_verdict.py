"""The chaos drill's oracle: expected books from generated events, and the verdict."""

from __future__ import annotations

import json
import random
import uuid
from bisect import bisect_right
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pipeline.core.live_usage import DayTotals
from pipeline.core.pricing import MarginConfig, Price
from pipeline.ops.chaos.verdict import (
    KILL,
    KILL_ONE_OF_TWO,
    READ_ONLY_POSTGRES,
    RESTART_KAFKA,
    RESTART_POSTGRES,
    Observed,
    PriceBook,
    Totals,
    expect,
    fault_plan,
    live_view_check,
    survivor_goal,
    verdict,
)
from pipeline.ops.demo.sample import DemoUser

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
OPENAI = uuid.UUID(int=1)
PAYER = DemoUser("pay@example", "pro", False, 100, 1.0)
BYOK = DemoUser("byok@example", "perpetual", True, 0, 1.0)
USERS = (PAYER, BYOK)
BOOK = PriceBook(
    providers={"openai": OPENAI},
    prices={
        (OPENAI, "gpt-4o"): [
            Price(OPENAI, "gpt-4o", Decimal("0.005"), Decimal("0.015"), None, None,
                  datetime(2024, 5, 1, tzinfo=UTC), None)
        ]
    },
    margins=[
        MarginConfig(uuid.UUID(int=2), "tier", "pro", None, None, Decimal("1.5"),
                     datetime(2025, 1, 1, tzinfo=UTC), None)
    ],
)  # fmt: skip


def line(user: DemoUser, **over: Any) -> bytes:
    event = {
        "request_id": str(uuid.uuid4()),
        "user_id": str(user.id),
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": 1000,
        "output_tokens": 2000,
        "started_at": (NOW - timedelta(minutes=5)).isoformat(),
        "completed_at": (NOW - timedelta(minutes=4)).isoformat(),
    } | over
    return json.dumps(event).encode()


def expected_of(lines: list[bytes]) -> Any:
    return expect(lines, USERS, BOOK, NOW, Decimal("0.001"), timedelta(minutes=5))


def test_expect_prices_books_and_rejects_independently() -> None:
    charged, free = line(PAYER), line(BYOK)
    unknown, malformed = line(PAYER, model="gpt-imaginary"), b'{"request_id": "trunc'
    conflict = json.loads(charged) | {"output_tokens": 1}
    lines = [charged, free, charged, unknown, malformed, json.dumps(conflict).encode()]

    out = expected_of(lines)

    assert len(out.booked) == 2 and len(out.charged) == 1 and out.duplicates == 1
    # The seed's worked example: USD 0.035 at the pro margin of 1.5 is 53 credits.
    assert out.totals[PAYER.id] == Totals(1, 1000, 2000, Decimal("0.035"), 53, 100 - 53)
    assert out.totals[BYOK.id] == Totals(1, 1000, 2000, Decimal(0), 0, 0)
    assert out.booked_at == [0, 1]  # the lines that book a row
    assert {reason for _, reason in out.rejected} == {
        "unknown_model",
        "malformed_json",
        "duplicate_conflict",
    }


def observed_as(out: Any, **over: Any) -> Observed:
    exact = Observed(
        usage_rows=Counter(out.booked),
        deductions=Counter(out.charged),
        dead_letters=Counter(out.rejected),
        violations=[],
        totals=dict(out.totals),
    )
    return replace(exact, **over)


def test_verdict_passes_exact_books_and_tolerates_repeated_dead_letters() -> None:
    out = expected_of([line(PAYER), line(PAYER, model="nope")])
    letters = Counter(out.rejected) + Counter(out.rejected)
    checks = verdict(out, observed_as(out, dead_letters=letters), USERS)
    assert all(c.passed for c in checks), checks
    assert "1 repeated after a redelivery" in checks[2].detail


def test_verdict_fails_each_broken_invariant() -> None:
    out = expected_of([line(PAYER), line(PAYER), line(PAYER, model="nope")])
    first = next(iter(out.charged))
    broken = observed_as(
        out,
        usage_rows=Counter(out.booked) + Counter([first]),
        deductions=Counter(out.charged) + Counter([first]),
        dead_letters=Counter(),
        violations=["balance_chain: user x"],
        totals={**out.totals, PAYER.id: Totals(2, 2000, 4000, Decimal("0.07"), 106, -112)},
    )
    checks = verdict(out, broken, USERS)
    assert [c.passed for c in checks] == [False] * 5
    assert "1 with more than one row" in checks[0].detail
    assert "1 charged twice" in checks[1].detail
    assert "1 missing" in checks[2].detail


def test_fault_plan_has_every_fault_once_and_the_kills() -> None:
    plan = fault_plan(3, random.Random(5))
    every = [KILL_ONE_OF_TWO, RESTART_POSTGRES, READ_ONLY_POSTGRES, RESTART_KAFKA]
    assert sorted(plan) == sorted([KILL] * 3 + every)
    assert plan == fault_plan(3, random.Random(5))


def test_survivor_goal_lies_within_the_lines_published_for_it() -> None:
    # 200 lines, every other one booking a row; the publisher holds back all from line 180,
    # whose first 90 rows are published. A catch-up take booked 88 of them before the fault.
    booked_at = list(range(0, 200, 2))
    sent = 180

    goal, lines = survivor_goal(booked_at, at=88, sent=sent)

    assert goal == 88 + 100 // 20
    assert lines > sent and bisect_right(booked_at, lines - 1) == goal
    assert survivor_goal(booked_at, at=10, sent=sent) == (15, sent)  # published already
    assert survivor_goal(booked_at, at=100, sent=sent) == (100, 199)  # the whole sample


A, B = uuid.uuid4(), uuid.uuid4()
DAY = DayTotals(3, 300, 600, 12, Decimal("0.0105"))


def test_a_live_view_equal_to_the_ledger_passes_whatever_the_faults() -> None:
    check = live_view_check({A: DAY}, {A: DAY, B: DayTotals()}, faults=[])
    assert check.passed, check.detail
    assert check.detail.startswith("2 of 2 users equal")


def test_a_short_view_passes_only_when_a_fault_of_the_run_can_lose_increments() -> None:
    short = {A: DayTotals(2, 200, 400, 8, Decimal("0.007"))}
    assert live_view_check({A: DAY}, short, faults=[KILL]).passed
    unexplained = live_view_check({A: DAY}, short, faults=[RESTART_POSTGRES])
    assert not unexplained.passed
    assert "short by 1 requests" in unexplained.detail
    assert "no fault of the run explains it" in unexplained.detail


def test_a_view_above_the_books_or_unanswered_fails_even_after_kills() -> None:
    above = DayTotals(3, 300, 600, 12, Decimal("0.0106"))
    assert not live_view_check({A: DAY}, {A: above}, faults=[KILL]).passed
    assert not live_view_check({A: DAY}, {A: None}, faults=[KILL]).passed
