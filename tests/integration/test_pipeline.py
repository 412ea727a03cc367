"""The usage pipeline end to end: events through the real topic, a real worker, real books.

One worker serves the module (each test uses its own users); the crash test runs its own.
"""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from pipeline.money.credits import Grant, grant
from pipeline.money.reconcile import reconcile
from pipeline.ops.demo.sample import generate
from tests.integration.pipeline_harness import Harness, make_event, wait_for

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def harness(new_books: Callable[[], str], kafka_bootstrap: str, tmp_path_factory: Any) -> Any:
    h = Harness(
        new_books(),
        kafka_bootstrap,
        env_overrides={"EXPIRY_INTERVAL_SECONDS": "1"},
    )
    h.start_worker(tmp_path_factory.mktemp("worker"))
    yield h
    h.stop_worker()


def new_user(
    h: Harness, credits: int = 0, tier: str | None = "pro", byok: bool = False
) -> uuid.UUID:
    with psycopg.connect(h.database_url) as conn:
        user = conn.execute(
            "INSERT INTO users (email) VALUES (%s) RETURNING id", (f"{uuid.uuid4()}@t.example",)
        ).fetchone()[0]
        if tier:
            conn.execute(
                """
                INSERT INTO subscription_monetization (user_id, tier, billing_cycle, status,
                    base_price_usd, monthly_credit_allocation, current_period_start,
                    current_period_end)
                VALUES (%s, %s, 'monthly', 'active', 19, 20000, %s, %s)
                """,
                (user, tier, NOW - timedelta(days=400), NOW + timedelta(days=30)),
            )
        if byok:
            conn.execute(
                """
                INSERT INTO perpetual_license (user_id, license_key, purchase_price_usd,
                    purchased_version, eligible_until_version, status, byok_enabled)
                VALUES (%s, %s, 199, '1.0.0', '1.99.99', 'active', true)
                """,
                (user, f"K-{user}"),
            )
        conn.commit()
        if credits:
            grant(conn, Grant(user, credits, "bonus"))
    return user


def balance(h: Harness, user: uuid.UUID) -> int:
    return int(h.query("SELECT amount FROM user_credit_balance WHERE user_id = %s", user)[0][0])


def assert_books_clean(h: Harness, *users: uuid.UUID) -> None:
    with psycopg.connect(h.database_url) as conn:
        for user in users:
            assert [str(v) for v in reconcile(conn, user)] == []


def test_seed_deduction_charges_the_price_table_cost(harness: Harness) -> None:
    user = new_user(harness, credits=1000)
    event = make_event(user)
    harness.publish([event])
    harness.wait_booked([event["request_id"]])
    [(cost, mult, credits, tier, deduction)] = harness.query(
        "SELECT vendor_cost, margin_multiplier, credits_deducted, user_tier_at_request, "
        "deduction_record_id FROM token_usage_ledger WHERE request_id = %s",
        event["request_id"],
    )
    assert (cost, mult, credits, tier) == (Decimal("0.035"), Decimal("1.50"), 53, "pro")
    [(amount, before, after)] = harness.query(
        "SELECT amount, balance_before, balance_after FROM credit_deduction_ledger WHERE id = %s",
        deduction,
    )
    assert (amount, before, after) == (-53, 1000, 947)
    assert balance(harness, user) == 947
    assert_books_clean(harness, user)


def test_a_batch_record_books_each_event_and_dead_letters_a_bad_one_alone(
    harness: Harness,
) -> None:
    user = new_user(harness, credits=1000)
    good, other = make_event(user), make_event(user, input_tokens=2000)
    bad = json.dumps(make_event(user, output_tokens=-1)).encode()
    raw = [json.dumps(good).encode(), bad, json.dumps(other).encode()]
    again = raw[0]  # a redelivery inside the same record
    key = str(user).encode()
    record = b"[" + b",\n ".join([*raw, again]) + b"]"
    broken = b'[{"request_id": "' + str(uuid.uuid4()).encode()
    harness.publish_records([(key, record), (key, broken)])
    harness.wait_booked([good["request_id"], other["request_id"]])

    def ours() -> list[Any] | None:
        found = [x for x in harness.dead_letters() if x.value in (bad, broken)]
        return found if len(found) == 2 else None

    letters = wait_for(ours, what="the bad event and the broken record in the dead-letter topic")
    by_value = {x.value: x for x in letters}
    assert by_value[bad].reason == "schema_violation" and by_value[bad].source_index == 1
    assert by_value[broken].reason == "malformed_json" and by_value[broken].source_index is None
    assert by_value[bad].source_offset == by_value[broken].source_offset - 1
    assert balance(harness, user) == 1000 - 53 - 60  # 0.035 and 0.040 USD at pro's 1.5
    assert_books_clean(harness, user)


def test_publish_batch_writes_batch_records_by_partition_that_book_like_single_ones(
    harness: Harness, tmp_path: Any
) -> None:
    from click.testing import CliRunner

    from pipeline.cli import main
    from pipeline.core.records import partition_of, split

    users = [new_user(harness, credits=10_000) for _ in range(3)]
    events = [make_event(users[i % 3]) for i in range(10)]
    source = tmp_path / "events.jsonl"
    source.write_text("".join(json.dumps(e) + "\n" for e in events) + "{not json\n")
    env = {"DATABASE_URL": harness.database_url, "KAFKA_BOOTSTRAP_SERVERS": harness.bootstrap}
    topic = f"{harness.usage_topic}.cli"
    done = CliRunner().invoke(
        main, ["publish", str(source), "--topic", topic, "--batch", "3"], env=env
    )
    assert done.exit_code == 1, done.output  # the topic must exist first: one line, no trace
    assert done.output.strip().splitlines()[-1] == f"Error: topic {topic} does not exist"
    done = CliRunner().invoke(
        main, ["publish", str(source), "--topic", harness.usage_topic, "--batch", "3"], env=env
    )
    assert done.exit_code == 0, done.output
    harness.wait_booked([e["request_id"] for e in events])
    ours = {e["request_id"] for e in events}
    mine: list[dict[str, Any]] = []
    for record in harness.read(harness.usage_topic):
        if not (record.value or b"").startswith(b"["):
            continue
        try:
            group = [json.loads(x) for x in split(record.value or b"")]
        except ValueError:  # another test's broken batch record
            continue
        if {e["request_id"] for e in group} <= ours:
            assert 1 <= len(group) <= 3
            assert {partition_of(e["user_id"].encode(), 2) for e in group} == {record.partition}
            mine += group
    assert sorted(e["request_id"] for e in mine) == sorted(ours)
    assert sum(balance(harness, u) for u in users) == 3 * 10_000 - 10 * 53
    assert_books_clean(harness, *users)


def test_byok_user_is_recorded_but_not_charged(harness: Harness) -> None:
    user = new_user(harness, credits=1000, tier=None, byok=True)
    event = make_event(user)
    harness.publish([event])
    harness.wait_booked([event["request_id"]])
    [(cost, credits, tier)] = harness.query(
        "SELECT vendor_cost, credits_deducted, user_tier_at_request FROM token_usage_ledger "
        "WHERE request_id = %s",
        event["request_id"],
    )
    assert (cost, credits, tier) == (0, 0, "perpetual")
    assert balance(harness, user) == 1000


def test_price_change_mid_day_prices_each_event_by_its_start(harness: Harness) -> None:
    user = new_user(harness, credits=100_000)
    model = f"model-{uuid.uuid4().hex[:6]}"
    switch = NOW - timedelta(hours=1)
    with psycopg.connect(harness.database_url) as conn:
        provider = conn.execute("SELECT id FROM providers WHERE api_type = 'openai'").fetchone()[0]
        conn.execute(
            """
            INSERT INTO model_provider_pricing (provider_id, model_name, input_price_per_1k,
                output_price_per_1k, effective_from, effective_until)
            VALUES (%s, %s, 0.001, 0.002, %s, %s), (%s, %s, 0.010, 0.020, %s, NULL)
            """,
            (provider, model, NOW - timedelta(days=30), switch, provider, model, switch),
        )
    before = make_event(user, model=model, started_at=switch - timedelta(minutes=1))
    after = make_event(user, model=model, started_at=switch + timedelta(minutes=1))
    harness.publish([before, after])
    harness.wait_booked([before["request_id"], after["request_id"]])
    costs = dict(
        harness.query(
            "SELECT request_id::text, vendor_cost FROM token_usage_ledger "
            "WHERE request_id::text = ANY(%s)",
            [before["request_id"], after["request_id"]],
        )
    )
    assert costs[before["request_id"]] == Decimal("0.005")  # 1k x 0.001 + 2k x 0.002
    assert costs[after["request_id"]] == Decimal("0.05")


def test_margin_precedence_and_approval(harness: Harness) -> None:
    user = new_user(harness, credits=100_000)
    with psycopg.connect(harness.database_url) as conn:
        admin = conn.execute("SELECT id FROM users ORDER BY created_at LIMIT 1").fetchone()[0]
        conn.execute(
            """
            INSERT INTO pricing_configs (scope_type, model_id, margin_multiplier,
                effective_from, reason, created_by, approval_status, approved_by)
            VALUES ('model', 'gpt-4-turbo', 3.0, %s, 'test', %s, 'approved', %s),
                   ('combination', 'gpt-4-turbo', 9.0, %s, 'test', %s, 'pending', NULL)
            """,
            (NOW - timedelta(days=1), admin, admin, NOW - timedelta(days=1), admin),
        )
        conn.execute(
            "UPDATE pricing_configs SET subscription_tier = 'pro' WHERE margin_multiplier = 9.0"
        )
    event = make_event(user, model="gpt-4-turbo")
    harness.publish([event])
    harness.wait_booked([event["request_id"]])
    [(mult, credits)] = harness.query(
        "SELECT margin_multiplier, credits_deducted FROM token_usage_ledger WHERE request_id = %s",
        event["request_id"],
    )
    # gpt-4-turbo: 1k x 0.01 + 2k x 0.03 = 0.07 USD; the approved model scope beats the
    # pro tier (1.5); the pending combination is ignored.
    assert (mult, credits) == (Decimal("3.00"), 210)


def test_cache_tokens_in_anthropic_shape(harness: Harness) -> None:
    user = new_user(harness, credits=100_000)
    event = make_event(user, provider="anthropic", model="claude-3-5-sonnet")
    del event["input_tokens"], event["output_tokens"]
    event["usage"] = {"input_tokens": 1000, "output_tokens": 0,
                      "cache_read_input_tokens": 6000, "cache_creation_input_tokens": 3000}  # fmt: skip
    harness.publish([event])
    harness.wait_booked([event["request_id"]])
    [(inp, cached, writes, cost)] = harness.query(
        "SELECT input_tokens, cached_input_tokens, cache_write_tokens, vendor_cost "
        "FROM token_usage_ledger WHERE request_id = %s",
        event["request_id"],
    )
    assert (inp, cached, writes, cost) == (10_000, 6000, 3000, Decimal("0.00705"))


def test_the_worker_expires_credit_sources_on_its_timer(harness: Harness) -> None:
    user = new_user(harness, credits=100)
    with psycopg.connect(harness.database_url) as conn:
        grant(conn, Grant(user, 700, "bonus", datetime.now(UTC) + timedelta(seconds=1)))
    wait_for(
        lambda: harness.query(
            "SELECT count(*) FROM credit_deduction_ledger WHERE user_id = %s AND reason = 'expiration'",
            user,
        )[0][0] == 1,
        30, "the worker's expiry run",
    )  # fmt: skip
    [(amount, before, after)] = harness.query(
        "SELECT amount, balance_before, balance_after FROM credit_deduction_ledger "
        "WHERE user_id = %s AND reason = 'expiration'",
        user,
    )
    assert (amount, before, after) == (-700, 800, 100)
    assert balance(harness, user) == 100
    assert_books_clean(harness, user)


def test_sources_pay_soonest_expiring_first_and_never_expired(harness: Harness) -> None:
    user = new_user(harness)
    with psycopg.connect(harness.database_url) as conn:
        grant(conn, Grant(user, 500, "bonus"))  # no expiry: pays last
        grant(conn, Grant(user, 30, "referral", NOW + timedelta(days=2)))
        grant(conn, Grant(user, 40, "coupon", NOW + timedelta(days=9)))
        conn.execute(
            "INSERT INTO user_credit_source (user_id, source, amount, expires_at) "
            "VALUES (%s, 'expired', 77, %s)",
            (user, NOW - timedelta(days=1)),
        )
    event = make_event(user)  # 53 credits
    harness.publish([event])
    harness.wait_booked([event["request_id"]])
    left = dict(
        harness.query("SELECT source, amount FROM user_credit_source WHERE user_id = %s", user)
    )
    assert left == {"referral": 0, "coupon": 17, "bonus": 500, "expired": 77}


def test_overdraft_and_exactly_one_alert_per_crossing(harness: Harness) -> None:
    user = new_user(harness, credits=150)
    events = [make_event(user) for _ in range(5)]  # 5 x 53 = 265 credits
    harness.publish(events)
    harness.wait_booked([e["request_id"] for e in events])
    assert balance(harness, user) == 150 - 265
    statuses = [s for (s,) in harness.query(
        "SELECT status FROM credit_deduction_ledger WHERE user_id = %s AND request_id IS NOT NULL "
        "ORDER BY seq", user)]  # fmt: skip
    assert statuses.count("overdraft") == 3
    mine = lambda: [a for a in harness.alerts() if a["user_id"] == str(user)]  # noqa: E731
    alerts = wait_for(lambda: len(mine()) >= 2 and mine(), 30, "two alerts")
    assert sorted(a["kind"] for a in alerts) == ["exhausted", "low_balance"]
    more = make_event(user)
    harness.publish([more])
    harness.wait_booked([more["request_id"]])
    assert len(mine()) == 2  # already below both marks: no new crossing
    assert_books_clean(harness, user)


def test_duplicates_redelivery_is_a_noop_and_conflict_goes_to_dlq(harness: Harness) -> None:
    user = new_user(harness, credits=1000)
    event = make_event(user)
    conflict = dict(event, output_tokens=1)
    harness.publish([event, event])
    harness.wait_booked([event["request_id"]])
    harness.publish([event, conflict])
    wait_for(
        lambda: any(d.value and event["request_id"].encode() in d.value for d in harness.dead_letters()),
        30, "the conflict in the DLQ",
    )  # fmt: skip
    [letter] = [
        d for d in harness.dead_letters() if d.value and event["request_id"].encode() in d.value
    ]
    assert letter.reason == "duplicate_conflict"
    assert balance(harness, user) == 947
    assert harness.query(
        "SELECT count(*) FROM credit_deduction_ledger WHERE user_id = %s AND request_id IS NOT NULL",
        user,
    ) == [(1,)]


def test_every_rejection_reason_reaches_the_dlq_with_original_bytes(harness: Harness) -> None:
    user = new_user(harness, credits=1000)
    old = datetime(2024, 6, 1, tzinfo=UTC)  # gpt-4-turbo is priced, no margin is in effect yet
    bad: dict[str, bytes | dict[str, Any]] = {
        "malformed_json": b'{"request_id": ',
        "schema_violation": make_event(user, output_tokens=-5),
        "unknown_user": make_event(uuid.uuid4()),
        "unknown_provider": make_event(user, provider="nowhere-ai"),
        "unknown_model": make_event(user, model="gpt-imaginary"),
        "no_pricing_config": make_event(user, model="gpt-4-turbo", started_at=old),
        "cost_out_of_range": make_event(user, model="gpt-4-turbo", output_tokens=2**31 - 1),
        "future": make_event(user, started_at=NOW + timedelta(hours=1)),
    }
    marker = uuid.uuid4().hex
    for value in bad.values():
        if isinstance(value, dict):
            value["region"] = marker[:50]
    harness.publish(list(bad.values()))

    def mine() -> dict[str, str]:
        found = {}
        for d in harness.dead_letters():
            if d.value == bad["malformed_json"] or (d.value and marker.encode() in d.value):
                found[d.value] = d.reason
        return found

    wait_for(lambda: len(mine()) >= len(bad), 60, "all rejections")
    found = mine()
    import json

    for name, value in bad.items():
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        expected = "schema_violation" if name == "future" else name
        assert found[raw] == expected, name
    assert balance(harness, user) == 1000


def test_one_user_with_hundreds_of_events_keeps_an_exact_chain(harness: Harness) -> None:
    user = new_user(harness, credits=10_000)
    events = [make_event(user, input_tokens=100 + i, output_tokens=10 * i) for i in range(400)]
    harness.publish(events)
    harness.wait_booked([e["request_id"] for e in events])
    [(charged,)] = harness.query(
        "SELECT sum(credits_deducted) FROM token_usage_ledger WHERE user_id = %s", user
    )
    assert balance(harness, user) == 10_000 - charged
    assert_books_clean(harness, user)


def test_sigkill_mid_stream_loses_nothing_and_charges_nothing_twice(
    new_books: Callable[[], str], kafka_bootstrap: str, tmp_path: Any
) -> None:
    h = Harness(new_books(), kafka_bootstrap, env_overrides={"BATCH_MAX_EVENTS": "100"})
    with psycopg.connect(h.database_url) as conn:
        from pipeline.ops.demo.sample import DEMO_USERS
        from pipeline.ops.demo.users import setup_users

        setup_users(conn, DEMO_USERS, NOW)
    sample = generate(6000, NOW, seed=11, bad_rate=0.0)
    h.publish(list(sample.lines))
    try:
        for _ in range(2):
            h.start_worker(tmp_path)
            floor = int(h.query("SELECT count(*) FROM token_usage_ledger")[0][0])
            wait_for(
                lambda floor=floor: h.query("SELECT count(*) FROM token_usage_ledger")[0][0] > floor + 200,
                90, "progress before the kill",
            )  # fmt: skip
            h.kill_worker(signal.SIGKILL)
        h.start_worker(tmp_path)
        wait_for(
            lambda: h.query("SELECT count(*) FROM token_usage_ledger")[0][0] == sample.unique_valid,
            120, f"all {sample.unique_valid} unique events booked",
        )  # fmt: skip
    finally:
        h.stop_worker()
    assert h.query(
        "SELECT count(*), count(DISTINCT request_id) FROM credit_deduction_ledger WHERE request_id IS NOT NULL"
    ) == h.query(
        "SELECT count(*), count(*) FROM token_usage_ledger WHERE deduction_record_id IS NOT NULL"
    )
    with psycopg.connect(h.database_url) as conn:
        assert [str(v) for v in reconcile(conn)] == []
