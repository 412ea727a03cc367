"""The books: one PostgreSQL transaction per batch of usage events.

Reads what `booking.plan_batch` needs under the balance-row locks, then writes the plan:
both ledgers by COPY, balances and sources by multi-row UPDATE, the daily rollups by
multi-row upsert and the alert outbox; then hands the plan to `before_commit` (which
dead-letters the rejected events, so a crash can repeat that but never skip it) and
commits. Balance rows are locked in `user_id` order, so concurrent batches never deadlock on them.

A request booked by a concurrent transaction surfaces as a unique violation: the whole
batch is then retried and re-planned, and the retry sees the row as a duplicate.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg

from pipeline.books.offsets import SkippedRecords, Span, check_and_advance
from pipeline.books.reference import Reference, ReferenceCache
from pipeline.books.stages import StageClock, timed
from pipeline.core import gateway_users
from pipeline.core.deduction import Source
from pipeline.core.events import Decoded, UsageEvent
from pipeline.core.plan import (
    BatchPlan,
    BookContext,
    DeductionRow,
    Subscription,
    UsageRow,
    plan_batch,
)

Cursor = psycopg.AsyncCursor[tuple[Any, ...]]


def by_int(value: UUID) -> int:
    """Sort key of UUIDs in PostgreSQL's order, compared in C (`UUID.__lt__` is Python)."""
    return value.int


# How a day's increments add into an existing summary row; shared by the bench filler.
TOKEN_SUMMARY_MERGE = """
    ON CONFLICT (user_id, summary_date) DO UPDATE SET
        total_requests = t.total_requests + EXCLUDED.total_requests,
        successful_requests = t.successful_requests + EXCLUDED.successful_requests,
        total_input_tokens = t.total_input_tokens + EXCLUDED.total_input_tokens,
        total_output_tokens = t.total_output_tokens + EXCLUDED.total_output_tokens,
        total_processing_time_ms = t.total_processing_time_ms + EXCLUDED.total_processing_time_ms,
        total_vendor_cost = t.total_vendor_cost + EXCLUDED.total_vendor_cost,
        total_credits_deducted = t.total_credits_deducted + EXCLUDED.total_credits_deducted,
        total_gross_margin = t.total_gross_margin + EXCLUDED.total_gross_margin,
        avg_request_latency_ms = round(
            (t.total_processing_time_ms + EXCLUDED.total_processing_time_ms)::numeric
            / (t.total_requests + EXCLUDED.total_requests)),
        success_rate = round(
            100.0 * (t.successful_requests + EXCLUDED.successful_requests)
            / (t.total_requests + EXCLUDED.total_requests), 2)
"""
CREDIT_SUMMARY_MERGE = """
    ON CONFLICT (user_id, summary_date) DO UPDATE SET
        total_deductions = t.total_deductions + EXCLUDED.total_deductions,
        total_requests = t.total_requests + EXCLUDED.total_requests,
        total_vendor_cost = t.total_vendor_cost + EXCLUDED.total_vendor_cost,
        total_gross_margin = t.total_gross_margin + EXCLUDED.total_gross_margin
"""
MODEL_SUMMARY_MERGE = """
    ON CONFLICT (summary_date, provider_id, model_id) DO UPDATE SET
        total_requests = t.total_requests + EXCLUDED.total_requests,
        total_input_tokens = t.total_input_tokens + EXCLUDED.total_input_tokens,
        total_output_tokens = t.total_output_tokens + EXCLUDED.total_output_tokens,
        total_cached_input_tokens =
            t.total_cached_input_tokens + EXCLUDED.total_cached_input_tokens,
        total_cache_write_tokens =
            t.total_cache_write_tokens + EXCLUDED.total_cache_write_tokens,
        total_vendor_cost = t.total_vendor_cost + EXCLUDED.total_vendor_cost,
        total_credits_deducted = t.total_credits_deducted + EXCLUDED.total_credits_deducted,
        total_credit_value_usd = t.total_credit_value_usd + EXCLUDED.total_credit_value_usd,
        gateway_costed_requests = t.gateway_costed_requests + EXCLUDED.gateway_costed_requests,
        total_gateway_cost_usd = t.total_gateway_cost_usd + EXCLUDED.total_gateway_cost_usd,
        gateway_costed_vendor_cost =
            t.gateway_costed_vendor_cost + EXCLUDED.gateway_costed_vendor_cost,
        updated_at = now()
"""


async def book_batch(
    conn: psycopg.AsyncConnection,
    decoded: Sequence[Decoded],
    usd_per_credit: Decimal,
    low_water: int,
    before_commit: Callable[[BatchPlan], Awaitable[None]],
    consumed: tuple[str, list[Span]] | None = None,
    reference: ReferenceCache | None = None,
    clock: StageClock | None = None,
) -> BatchPlan:
    """Plan and write one batch in one transaction; returns the committed plan.

    `consumed` is (consumer group, the batch's offset spans): the booked-up-to offsets
    advance in the same transaction, and `SkippedRecords` rolls it back if the batch
    starts past them. `reference` keeps the priced-with rows across batches (a fresh
    read when None); `clock` times the transaction's stages.
    """
    cache = reference or ReferenceCache()
    with timed(clock, "transaction"):
        async with conn.transaction(), conn.cursor() as cur:
            if consumed is not None:
                gaps = await check_and_advance(cur, *consumed)
                if gaps:
                    raise SkippedRecords(gaps)
            now, ref = await cache.read(cur)
            decoded = await _link_gateway_users(cur, decoded)
            events = [d for d in decoded if isinstance(d, UsageEvent)]
            ctx = await load_context(cur, ref, events)
            with timed(clock, "plan"):
                plan = plan_batch(decoded, ctx, usd_per_credit, low_water, now)
            await write_plan(cur, plan)
            with timed(clock, "dead_letters"):
                await before_commit(plan)
    return plan


async def _link_gateway_users(cur: Cursor, decoded: Sequence[Decoded]) -> Sequence[Decoded]:
    """The batch with its gateway users' events given our users' ids (no query when the
    batch names none)."""
    pairs = gateway_users.wanted(decoded)
    if not pairs:
        return decoded
    await cur.execute(
        """
        SELECT l.gateway, l.external_id, l.user_id
        FROM gateway_user_links AS l
        JOIN unnest(%b::text[], %b::text[]) AS w(gateway, external_id)
            USING (gateway, external_id)
        """,
        ([g for g, _ in pairs], [e for _, e in pairs]),
    )
    links = {(r[0], r[1]): r[2] for r in await cur.fetchall()}
    return gateway_users.linked(decoded, links)


async def load_context(cur: Cursor, ref: Reference, events: list[UsageEvent]) -> BookContext:
    """The batch's users, balances (locked), sources and already-booked requests."""
    users = sorted({e.user_id for e in events}, key=by_int)
    requests = [e.request_id for e in events]

    await cur.execute("SELECT id FROM users WHERE id = ANY(%b)", (users,))
    known = frozenset(r[0] for r in await cur.fetchall())

    await cur.execute(
        """
        SELECT user_id, tier::text, status::text, current_period_start, current_period_end
        FROM subscription_monetization
        WHERE user_id = ANY(%b) AND status IN ('active', 'trial')
        """,
        (users,),
    )
    subscriptions: dict[UUID, list[Subscription]] = defaultdict(list)
    for r in await cur.fetchall():
        subscriptions[r[0]].append(Subscription(*r[1:]))

    await cur.execute(
        """
        SELECT DISTINCT user_id FROM perpetual_license
        WHERE user_id = ANY(%b) AND status = 'active' AND byok_enabled
        """,
        (users,),
    )
    byok = frozenset(r[0] for r in await cur.fetchall())

    # Lock order: balance rows by user_id, the same in every money-moving transaction.
    chargeable = sorted(known - byok, key=by_int)
    await cur.execute(
        """
        INSERT INTO user_credit_balance (user_id, amount)
        SELECT u, 0 FROM unnest(%b::uuid[]) AS u ORDER BY u
        ON CONFLICT (user_id) DO NOTHING
        """,
        (chargeable,),
    )
    await cur.execute(
        """
        SELECT user_id, amount FROM user_credit_balance
        WHERE user_id = ANY(%b) ORDER BY user_id FOR UPDATE
        """,
        (chargeable,),
    )
    balances = {r[0]: r[1] for r in await cur.fetchall()}

    await cur.execute(
        """
        SELECT user_id, id, amount, expires_at, created_at FROM user_credit_source
        WHERE user_id = ANY(%b) AND amount > 0
        """,
        (chargeable,),
    )
    sources: dict[UUID, list[Source]] = defaultdict(list)
    for r in await cur.fetchall():
        sources[r[0]].append(Source(*r[1:]))

    await cur.execute(
        "SELECT request_id, event_fingerprint FROM token_usage_ledger WHERE request_id = ANY(%b)",
        (requests,),
    )
    booked = {r[0]: bytes(r[1]) for r in await cur.fetchall()}

    return BookContext(
        providers=ref.providers,
        prices=ref.prices,
        margins=ref.margins,
        known_users=known,
        subscriptions=dict(subscriptions),
        byok_users=byok,
        balances=balances,
        sources=dict(sources),
        booked=booked,
    )


# The COPY columns are the rows' own fields: their tuples are written as they are, in
# PostgreSQL's binary format (no text formatting of UUIDs, numerics and timestamps).
_DEDUCTION_COLUMNS = ", ".join(DeductionRow._fields)
_DEDUCTION_TYPES = (
    "uuid", "uuid", "int4", "int4", "int4", "uuid", "numeric", "numeric", "numeric",
    "varchar", "varchar",
)  # fmt: skip
_USAGE_COLUMNS = ", ".join(UsageRow._fields)
_USAGE_TYPES = (
    "uuid", "uuid", "uuid", "varchar", "uuid", "int4", "int4", "int4", "int4", "numeric",
    "numeric", "numeric", "int4", "varchar", "int4", "timestamptz", "timestamptz", "int4",
    "varchar", "text", "bool", "varchar", "varchar", "uuid", "bytea", "numeric", "jsonb",
)  # fmt: skip


async def write_plan(cur: Cursor, plan: BatchPlan) -> None:
    if plan.deductions:
        async with cur.copy(
            f"COPY credit_deduction_ledger ({_DEDUCTION_COLUMNS}) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(_DEDUCTION_TYPES)
            for deduction in plan.deductions:
                await copy.write_row(deduction)
    if plan.usage_rows:
        async with cur.copy(
            f"COPY token_usage_ledger ({_USAGE_COLUMNS}) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(_USAGE_TYPES)
            for row in plan.usage_rows:
                await copy.write_row(row)
    await _write_totals(cur, plan)
    if plan.alerts:
        await cur.executemany(
            """
            INSERT INTO credit_alert_outbox (id, user_id, kind, balance, low_water, request_id)
            VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING
            """,
            [
                (a.id, a.user_id, a.kind.value, a.balance, a.low_water, a.request_id)
                for a in plan.alerts
            ],
        )


async def _write_totals(cur: Cursor, plan: BatchPlan) -> None:
    """The balances, the sources and the three daily rollups in one statement (one round
    trip instead of five: a transaction's fixed cost, what a small batch pays most). Each
    part touches its own table; its rows go in key order, as every writer's do."""
    last = {d.user_id: -d.amount for d in plan.deductions}
    users = sorted(plan.balances, key=by_int)
    ids = sorted(plan.source_amounts, key=by_int)
    days = plan.user_days
    day_keys = sorted(days, key=lambda k: (k[0].int, k[1]))
    rows = [days[k] for k in day_keys]
    charged = [k for k in day_keys if days[k].deductions]
    models = plan.model_days
    model_keys = sorted(models, key=lambda k: (k[0], k[1].int, k[2]))
    m = [models[k] for k in model_keys]
    if not (users or ids or day_keys or model_keys):
        return
    await cur.execute(
        """
        WITH balances AS (
            UPDATE user_credit_balance AS b
            SET amount = v.amount, last_deduction_at = now(),
                last_deduction_amount = v.last_amount, updated_at = now()
            FROM unnest(%b::uuid[], %b::int[], %b::int[]) AS v(user_id, amount, last_amount)
            WHERE b.user_id = v.user_id
        ), sources AS (
            UPDATE user_credit_source AS s SET amount = v.amount
            FROM unnest(%b::uuid[], %b::int[]) AS v(id, amount)
            WHERE s.id = v.id
        ), tokens AS (
            INSERT INTO token_usage_daily_summary AS t (
                user_id, summary_date, total_requests, successful_requests, total_input_tokens,
                total_output_tokens, total_processing_time_ms, total_vendor_cost,
                total_credits_deducted, total_gross_margin, avg_request_latency_ms, success_rate)
            SELECT v.*, round(v.latency::numeric / v.requests), round(100.0 * v.ok / v.requests, 2)
            FROM unnest(%b::uuid[], %b::date[], %b::int[], %b::int[], %b::int[], %b::int[],
                        %b::bigint[], %b::numeric[], %b::int[], %b::numeric[])
                AS v(user_id, day, requests, ok, input, output, latency, cost, credits, margin)
            """ + TOKEN_SUMMARY_MERGE + """
        ), credits AS (
            INSERT INTO credit_usage_daily_summary AS t (
                user_id, summary_date, total_deductions, total_requests,
                total_vendor_cost, total_gross_margin)
            SELECT * FROM unnest(%b::uuid[], %b::date[], %b::int[], %b::int[],
                                 %b::numeric[], %b::numeric[])
            """ + CREDIT_SUMMARY_MERGE + """
        ), models AS (
            INSERT INTO model_usage_daily_summary AS t (
                summary_date, provider_id, model_id, total_requests, total_input_tokens,
                total_output_tokens, total_cached_input_tokens, total_cache_write_tokens,
                total_vendor_cost, total_credits_deducted, total_credit_value_usd,
                gateway_costed_requests, total_gateway_cost_usd, gateway_costed_vendor_cost)
            SELECT * FROM unnest(%b::date[], %b::uuid[], %b::text[], %b::bigint[], %b::bigint[],
                                 %b::bigint[], %b::bigint[], %b::bigint[], %b::numeric[],
                                 %b::bigint[], %b::numeric[], %b::bigint[], %b::numeric[],
                                 %b::numeric[])
            """ + MODEL_SUMMARY_MERGE + """
        )
        SELECT 1
        """,
        (
            users, [plan.balances[u] for u in users], [last[u] for u in users],
            ids, [plan.source_amounts[i] for i in ids],
            [k[0] for k in day_keys], [k[1] for k in day_keys],
            [r.requests for r in rows], [r.successful_requests for r in rows],
            [r.input_tokens for r in rows], [r.output_tokens for r in rows],
            [r.processing_time_ms for r in rows], [r.vendor_cost for r in rows],
            [r.credits for r in rows], [r.gross_margin for r in rows],
            [k[0] for k in charged], [k[1] for k in charged],
            [days[k].credits for k in charged], [days[k].deductions for k in charged],
            [days[k].deducted_vendor_cost for k in charged],
            [days[k].deducted_gross_margin for k in charged],
            [k[0] for k in model_keys], [k[1] for k in model_keys], [k[2] for k in model_keys],
            [x.requests for x in m], [x.input_tokens for x in m],
            [x.output_tokens for x in m], [x.cached_input_tokens for x in m],
            [x.cache_write_tokens for x in m], [x.vendor_cost for x in m],
            [x.credits for x in m], [x.credit_value_usd for x in m],
            [x.gateway_costed_requests for x in m], [x.gateway_cost_usd for x in m],
            [x.gateway_costed_vendor_cost for x in m],
        ),
    )  # fmt: skip
