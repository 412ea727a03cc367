"""Random streams through the real worker while grants, expiries and reversals run beside it.

Each seed publishes a random stream (`random_streams.random_stream`: late events, identical
and other-shape redeliveries, conflicting duplicates, bad events) in three chunks, kills
the worker with SIGKILL mid-stream and restarts it, while two threads move money in the
same books: one grants credits (some expiring within seconds, some with a repeated
idempotency key) and expires them, one reverses booked requests (again afterwards, and
twice at the same moment). Afterwards the books must reconcile, the daily summaries must
equal the ledger sums (checked here with our own SQL) and an independent Python model of
what the test did: every balance is granted - deducted - expired + reversed.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest

from pipeline.money.credits import CREDIT_TYPES, Grant, grant
from pipeline.money.movements import expire, reverse
from pipeline.money.reconcile import reconcile
from pipeline.ops.demo.sample import DemoUser
from pipeline.ops.demo.users import setup_users
from pipeline.schema import seed
from tests.integration.pipeline_harness import Harness, wait_for
from tests.integration.random_streams import RandomStream, expected_charge, random_stream

pytestmark = [pytest.mark.integration, pytest.mark.drill]

SEEDS = (20250101, 4242, 977)
UNIQUE_EVENTS = 1000
REVERSALS = 24

USERS = (
    DemoUser("big@random.example", "enterprise_max", False, 300_000, 4.0),
    DemoUser("max@random.example", "pro_max", False, 40_000, 2.0),
    DemoUser("pro@random.example", "pro", False, 4_000, 2.0),  # overdraws, grants repay
    DemoUser("free@random.example", None, False, 300, 1.0),
    DemoUser("byok@random.example", "perpetual", True, 0, 1.0),
    DemoUser("idle@random.example", "pro", False, 1_000, 0.0),  # grants and expiry only
)
BY_ID = {u.id: u for u in USERS}
# Small batches, so the kill lands mid-stream; the worker's own expiry timer every second,
# racing the test's. Faust's own variables (read by Faust, not by us): the killed worker's
# group membership lapses in 6 s instead of Faust's default 60 s, which is how long the
# restarted worker would otherwise wait for its partitions.
WORKER_ENV = {
    "BATCH_MAX_EVENTS": "20",
    "EXPIRY_INTERVAL_SECONDS": "1",
    "BROKER_SESSION_TIMEOUT": "6",
    "BROKER_HEARTBEAT_INTERVAL": "1",
}
IDLE = USERS[-1].id


@dataclass
class Journal:
    """What the money threads did, as they saw it."""

    granted: Counter[UUID] = field(default_factory=Counter)
    expiring: Counter[UUID] = field(default_factory=Counter)
    """Credits granted with an expiry inside the run: the most that can expire."""
    last_expiry: datetime = field(default_factory=lambda: datetime.now(UTC))
    expired_total: int = 0
    """Credits the test's own `expire` calls reported (the worker's timer expires too)."""
    allocations: int = 0
    repeated_keys: int = 0
    refunds: dict[str, int] = field(default_factory=dict)
    """request_id -> credits refunded by the one reversal that applied."""
    second_reversals: int = 0
    races: int = 0
    errors: list[BaseException] = field(default_factory=list)


def run_until_stopped(journal: Journal, stop: threading.Event, body: Callable[[], None]) -> None:
    try:
        body()
    except BaseException as exc:  # reported by the main thread
        journal.errors.append(exc)
        stop.set()


def grants_and_expiries(
    db: str, rng: random.Random, journal: Journal, stop: threading.Event
) -> None:
    keys: list[str] = []
    with psycopg.connect(db) as conn:
        while not stop.wait(0.03):
            if rng.random() < 0.3:
                journal.expired_total += expire(conn, datetime.now(UTC))
                continue
            user = rng.choice(USERS).id
            amount = rng.randint(1, 2500)
            expires_at = None
            if rng.random() < 0.5:
                expires_at = datetime.now(UTC) + timedelta(seconds=rng.uniform(0.3, 4))
            repeat = bool(keys) and rng.random() < 0.1
            key = rng.choice(keys) if repeat else f"random-{len(keys)}"
            result = grant(conn, Grant(user, amount, rng.choice(CREDIT_TYPES), expires_at, key))
            assert result.applied is not repeat, key
            if repeat:
                assert result.balance_before == result.balance_after
                journal.repeated_keys += 1
                continue
            keys.append(key)
            journal.allocations += 1
            journal.granted[user] += amount
            if expires_at is not None:
                journal.expiring[user] += amount
                journal.last_expiry = max(journal.last_expiry, expires_at)


def reversals(
    db: str, rng: random.Random, candidates: list[str], journal: Journal, stop: threading.Event
) -> None:
    def reverse_once(request_id: str, barrier: threading.Barrier | None = None) -> Any:
        with psycopg.connect(db) as conn:
            if barrier is not None:
                barrier.wait(10)
            return reverse(conn, UUID(request_id), "random test", seed.ADMIN_USER_ID)

    with psycopg.connect(db, autocommit=True) as conn:
        while len(journal.refunds) < REVERSALS and not stop.wait(0.05):
            booked = [str(r) for (r,) in conn.execute(
                "SELECT request_id FROM credit_deduction_ledger "
                "WHERE request_id = ANY(%s) AND reversed_at IS NULL", ([UUID(c) for c in candidates],),
            ).fetchall()]  # fmt: skip
            if not booked:
                continue
            request_id = rng.choice(booked)
            if rng.random() < 0.3:  # two admins at the same moment: exactly one refund
                barrier = threading.Barrier(2)
                with ThreadPoolExecutor(2) as pool:
                    pair = [pool.submit(reverse_once, request_id, barrier) for _ in range(2)]
                    results = [f.result(30) for f in pair]
                applied = [r for r in results if r.applied]
                assert len(applied) == 1, results
                first = applied[0]
                journal.races += 1
            else:
                first = reverse_once(request_id)
                assert first.applied
                if rng.random() < 0.5:
                    again = reverse_once(request_id)
                    assert not again.applied and again.credits_refunded == 0
                    assert again.balance_before == again.balance_after
                    journal.second_reversals += 1
            journal.refunds[request_id] = first.credits_refunded


def count(h: Harness, query: str, *params: Any) -> int:
    return int(h.query(query, *params)[0][0])


@pytest.mark.parametrize("stream_seed", SEEDS)
def test_random_stream_with_crash_and_money_movements_keeps_exact_books(
    stream_seed: int, seeded_db: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    print(f"random stream seed {stream_seed}")
    now = datetime.now(UTC)
    with psycopg.connect(seeded_db) as conn:
        setup_users(conn, USERS, now)
    stream = random_stream(stream_seed, UNIQUE_EVENTS, now, USERS)
    charges = {
        rid: expected_charge(e, BY_ID[UUID(e["user_id"])]) for rid, e in stream.valid.items()
    }
    first_chunk = {rid for rid in stream.valid if any(rid.encode() in x for x in stream.chunks[0])}
    candidates = sorted(rid for rid in first_chunk if charges[rid][1] > 0)
    h = Harness(seeded_db, kafka_bootstrap, env_overrides=WORKER_ENV)
    journal = Journal()
    stop = threading.Event()
    rng = random.Random(stream_seed)
    grants_rng, reversals_rng = random.Random(rng.random()), random.Random(rng.random())
    threads = [
        threading.Thread(target=run_until_stopped, args=(journal, stop, lambda: grants_and_expiries(
            seeded_db, grants_rng, journal, stop))),
        threading.Thread(target=run_until_stopped, args=(journal, stop, lambda: reversals(
            seeded_db, reversals_rng, candidates, journal, stop))),
    ]  # fmt: skip
    started = time.monotonic()
    try:
        h.publish(list(stream.chunks[0]))
        h.start_worker(tmp_path)
        for t in threads:
            t.start()
        wait_for(lambda: h.alive() and count(h, "SELECT count(*) FROM token_usage_ledger") >= 20,
                 60, "the first commits")  # fmt: skip
        h.kill_worker(signal.SIGKILL)
        at_kill = count(h, "SELECT count(*) FROM token_usage_ledger")
        assert at_kill < len(first_chunk), "the worker was killed after the stream, not in it"
        h.publish(list(stream.chunks[1]))
        h.start_worker(tmp_path)
        h.publish(list(stream.chunks[2]))
        try:
            h.wait_booked(list(stream.valid), timeout=120)
        except AssertionError as exc:
            booked = {r for (r,) in h.query("SELECT request_id::text FROM token_usage_ledger")}
            missing = set(stream.valid) - booked
            raise AssertionError(
                f"{exc}: {len(missing)} never booked, {len(missing & first_chunk)} of them "
                f"published before the kill ({at_kill} booked then)"
            ) from None
        wait_for(lambda: set(stream.rejected) <= {d.value for d in h.dead_letters()},
                 60, "every rejected line in the DLQ")  # fmt: skip
        wait_for(lambda: journal.errors or len(journal.refunds) >= REVERSALS, 60, "the reversals")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        h.stop_worker()
    if journal.errors:
        raise journal.errors[0]
    wait_for(lambda: datetime.now(UTC) > journal.last_expiry, 10, "the last grant to expire")
    with psycopg.connect(seeded_db) as conn:
        journal.expired_total += expire(conn, datetime.now(UTC))
    print(
        f"seed {stream_seed}: {sum(map(len, stream.chunks))} lines, {len(stream.valid)} valid, "
        f"{stream.redeliveries} redeliveries, {len(stream.rejected)} rejected; killed at "
        f"{at_kill} booked; {journal.allocations} grants (+{journal.repeated_keys} repeated "
        f"keys), {journal.expired_total} credits expired by the test, {len(journal.refunds)} reversals "
        f"({journal.second_reversals} repeated, {journal.races} raced); "
        f"{time.monotonic() - started:.1f}s"
    )

    with psycopg.connect(seeded_db) as conn:
        assert [str(v) for v in reconcile(conn)] == []
    assert_ledger_holds_exactly_the_valid_requests(h, stream, charges, journal)
    assert_summaries_equal_ledger(h)
    assert_summaries_equal_the_model(h, stream, charges, journal)
    assert_balances_equal_the_model(h, stream, charges, journal)
    assert_dead_letters(h, stream)


def assert_ledger_holds_exactly_the_valid_requests(
    h: Harness, stream: RandomStream, charges: dict[str, tuple[Any, int]], journal: Journal
) -> None:
    rows = h.query("SELECT request_id::text, vendor_cost, credits_deducted FROM token_usage_ledger")
    assert len(rows) == len(stream.valid)
    assert {r[0]: (r[1], r[2]) for r in rows} == charges
    deductions = h.query(
        "SELECT request_id::text, -amount, status FROM credit_deduction_ledger "
        "WHERE request_id IS NOT NULL"
    )
    assert len(deductions) == len({r[0] for r in deductions})
    assert {r[0]: r[1] for r in deductions} == {k: c for k, (_, c) in charges.items() if c > 0}
    assert {r[0] for r in deductions if r[2] == "reversed"} == set(journal.refunds)
    assert {k: charges[k][1] for k in journal.refunds} == journal.refunds
    refund_rows = h.query(
        "SELECT count(*), coalesce(sum(amount), 0) FROM credit_deduction_ledger "
        "WHERE reason = 'reversal'"
    )
    assert refund_rows == [(len(journal.refunds), sum(journal.refunds.values()))]
    initial = sum(1 for u in USERS if u.credits)
    assert count(h, "SELECT count(*) FROM credit_allocation") == initial + journal.allocations


def assert_summaries_equal_ledger(h: Harness) -> None:
    """Our own SQL: each summary table, row for row, against its ledger sums."""
    checks = {
        "token_usage_daily_summary": (
            """
            SELECT u.user_id, (u.request_started_at AT TIME ZONE 'UTC')::date, count(*),
                   count(*) FILTER (WHERE u.status = 'success'), sum(u.input_tokens),
                   sum(u.output_tokens), sum(u.processing_time_ms), sum(u.vendor_cost),
                   coalesce(sum(u.credits_deducted) FILTER (WHERE d.status IS DISTINCT FROM 'reversed'), 0),
                   sum(u.gross_margin_usd)
            FROM token_usage_ledger u
            LEFT JOIN credit_deduction_ledger d ON d.id = u.deduction_record_id
            GROUP BY 1, 2
            """,
            """
            SELECT user_id, summary_date, total_requests, successful_requests,
                   total_input_tokens, total_output_tokens, total_processing_time_ms,
                   total_vendor_cost, total_credits_deducted, total_gross_margin
            FROM token_usage_daily_summary
            """,
        ),
        "credit_usage_daily_summary": (
            """
            SELECT u.user_id, (u.request_started_at AT TIME ZONE 'UTC')::date,
                   coalesce(sum(-d.amount) FILTER (WHERE d.status IS DISTINCT FROM 'reversed'), 0), count(*),
                   sum(u.vendor_cost), sum(u.gross_margin_usd)
            FROM token_usage_ledger u JOIN credit_deduction_ledger d ON d.id = u.deduction_record_id
            GROUP BY 1, 2
            """,
            """
            SELECT user_id, summary_date, total_deductions, total_requests, total_vendor_cost,
                   total_gross_margin
            FROM credit_usage_daily_summary
            """,
        ),
        "model_usage_daily_summary": (
            """
            SELECT (u.request_started_at AT TIME ZONE 'UTC')::date, u.provider_id, u.model_id,
                   count(*), sum(u.input_tokens), sum(u.output_tokens),
                   sum(u.cached_input_tokens), sum(u.cache_write_tokens), sum(u.vendor_cost),
                   coalesce(sum(u.credits_deducted) FILTER (WHERE d.status IS DISTINCT FROM 'reversed'), 0),
                   sum(u.credit_value_usd)
            FROM token_usage_ledger u
            LEFT JOIN credit_deduction_ledger d ON d.id = u.deduction_record_id
            GROUP BY 1, 2, 3
            """,
            """
            SELECT summary_date, provider_id, model_id, total_requests, total_input_tokens,
                   total_output_tokens, total_cached_input_tokens, total_cache_write_tokens,
                   total_vendor_cost, total_credits_deducted, total_credit_value_usd
            FROM model_usage_daily_summary
            """,
        ),
    }
    for table, (ledger, summary) in checks.items():
        expected, found = set(h.query(ledger)), set(h.query(summary))
        assert expected, table
        assert found == expected, (table, sorted(found ^ expected, key=str)[:6])


def utc_day(event: dict[str, Any]) -> date:
    return datetime.fromisoformat(event["started_at"]).astimezone(UTC).date()


def assert_summaries_equal_the_model(
    h: Harness, stream: RandomStream, charges: dict[str, tuple[Any, int]], journal: Journal
) -> None:
    """The summaries against what the test published and reversed, without the ledger."""
    requests: Counter[tuple[UUID, date]] = Counter()
    credits: Counter[tuple[UUID, date]] = Counter()
    per_model: Counter[tuple[date, str]] = Counter()
    for rid, event in stream.valid.items():
        key = (UUID(event["user_id"]), utc_day(event))
        requests[key] += 1
        credits[key] += charges[rid][1] - journal.refunds.get(rid, 0)
        per_model[(utc_day(event), event["model"])] += 1
    summary = h.query(
        "SELECT user_id, summary_date, total_requests, total_credits_deducted "
        "FROM token_usage_daily_summary"
    )
    assert {(u, d): n for u, d, n, _ in summary} == dict(requests)
    assert {(u, d): c for u, d, _, c in summary} == dict(credits)
    days = {d for _, d in requests}
    assert len(days) > 2, "the late events should spread over several days"
    models = h.query("SELECT summary_date, model_id, total_requests FROM model_usage_daily_summary")
    assert {(d, m): n for d, m, n in models} == dict(per_model)


def assert_balances_equal_the_model(
    h: Harness, stream: RandomStream, charges: dict[str, tuple[Any, int]], journal: Journal
) -> None:
    """balance = granted - deducted - expired + reversed, per user."""
    deducted: Counter[UUID] = Counter()
    reversed_: Counter[UUID] = Counter()
    for rid, event in stream.valid.items():
        deducted[UUID(event["user_id"])] += charges[rid][1]
        reversed_[UUID(event["user_id"])] += journal.refunds.get(rid, 0)
    expired = dict(
        h.query(
            "SELECT user_id, -sum(amount) FROM credit_deduction_ledger "
            "WHERE reason = 'expiration' GROUP BY user_id"
        )
    )
    # Expiry amounts depend on how usage raced the grants, so they come from the ledger; the
    # worker expires too, so the test's `expire` calls did part of it; and no user lost more
    # than was expiring: a source expired twice would show here.
    assert sum(expired.values()) >= journal.expired_total
    assert expired, "nothing expired"
    for user, amount in expired.items():
        assert 0 < amount <= journal.expiring[user], user
    assert expired.get(IDLE, 0) == journal.expiring[IDLE]  # nothing spends the idle user's
    balances = dict(h.query("SELECT user_id, amount FROM user_credit_balance"))
    for user in USERS:
        granted = user.credits + journal.granted[user.id]
        expected = granted - deducted[user.id] - expired.get(user.id, 0) + reversed_[user.id]
        assert balances.get(user.id, 0) == expected, user.email
    assert (
        count(h, "SELECT count(*) FROM user_credit_source WHERE amount > 0 AND expires_at <= now()")
        == 0
    )


def assert_dead_letters(h: Harness, stream: RandomStream) -> None:
    letters = h.dead_letters()
    reasons = {d.value: d.reason for d in letters}
    assert {line: reasons[line] for line in stream.rejected} == stream.rejected
    # A crash may repeat a dead letter, never add one: nothing else is in the DLQ.
    assert set(reasons) == set(stream.rejected)
