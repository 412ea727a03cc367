"""The baseline: the seed's per-request flow ("Token Usage + Credit Deduction" test).

One transaction per event: insert the usage row, read the balance, insert the deduction,
update the balance, link the deduction to the usage row. Prices, margins and tiers are
read once and kept in memory, and the charge is computed with our own pricing functions,
so the baseline differs from the pipeline only in how it writes: per request, without
the daily summaries, credit sources or dead letters. A redelivery is skipped by the
usage row's unique request_id; an event that does not decode or has no price is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg

from pipeline.books import reference
from pipeline.core import pricing
from pipeline.core.events import Rejection, UsageEvent
from pipeline.core.plan import DEFAULT_TIER
from pipeline.core.pricing import (
    Charge,
    MarginResolver,
    Price,
)


@dataclass(frozen=True)
class Reference:
    providers: dict[str, UUID]
    prices: dict[tuple[UUID, str], list[Price]]
    margins: MarginResolver
    tiers: dict[UUID, str]
    subscriptions: dict[UUID, UUID]


async def load_reference(conn: psycopg.AsyncConnection[Any]) -> Reference:
    """The worker's reference rows (`pipeline.books.reference.load`) and each user's active
    subscription and its tier."""
    async with conn.cursor() as cur:
        rows = await reference.load(cur, version=0)
        await cur.execute(
            "SELECT user_id, id, tier::text FROM subscription_monetization "
            "WHERE status IN ('active', 'trial')"
        )
        subs = await cur.fetchall()
    return Reference(
        rows.providers,
        rows.prices,
        rows.margins,
        {r[0]: r[2] for r in subs},
        {r[0]: r[1] for r in subs},
    )


def price_event(ref: Reference, event: UsageEvent, usd_per_credit: Decimal) -> Charge | None:
    """The charge of one event; None if its provider, price or margin is unknown."""
    provider_id = ref.providers.get(event.provider.lower())
    if provider_id is None:
        return None
    tier = ref.tiers.get(event.user_id, DEFAULT_TIER)
    prices = ref.prices.get((provider_id, event.model), [])
    cost = pricing.price_event(
        event, provider_id, tier, prices, ref.margins.resolve, usd_per_credit
    )
    return None if isinstance(cost, Rejection) else cost


async def book_one(
    conn: psycopg.AsyncConnection[Any], ref: Reference, event: UsageEvent, cost: Charge
) -> bool:
    """The seed's flow for one request in one transaction; False for a redelivery."""
    provider_id = ref.providers[event.provider.lower()]
    tier = ref.tiers.get(event.user_id, DEFAULT_TIER)
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute(
            """
            INSERT INTO token_usage_ledger (
                request_id, user_id, subscription_id, model_id, provider_id, input_tokens,
                output_tokens, cached_input_tokens, cache_write_tokens, vendor_cost,
                margin_multiplier, credit_value_usd, credits_deducted, request_type,
                streaming_segments, request_started_at, request_completed_at,
                processing_time_ms, status, error_message, is_streaming_complete,
                user_tier_at_request, region, event_fingerprint)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                    %s, %s, %s, %s, %s, %s)
            ON CONFLICT (request_id) DO NOTHING
            RETURNING id
            """,
            (
                event.request_id, event.user_id, ref.subscriptions.get(event.user_id),
                event.model, provider_id, event.input_tokens, event.output_tokens,
                event.cached_input_tokens, event.cache_write_tokens, cost.vendor_cost,
                cost.margin_multiplier, cost.credit_value_usd, cost.credits,
                event.request_type, event.streaming_segments, event.started_at,
                event.completed_at, event.processing_time_ms, event.status.value,
                event.error_message, event.is_streaming_complete, tier, event.region,
                event.fingerprint(),
            ),
        )  # fmt: skip
        usage = await cur.fetchone()
        if usage is None:
            return False
        if cost.credits == 0:
            return True
        await cur.execute(
            "SELECT amount FROM user_credit_balance WHERE user_id = %s FOR UPDATE",
            (event.user_id,),
        )
        row = await cur.fetchone()
        before = int(row[0]) if row else 0
        await cur.execute(
            """
            INSERT INTO credit_deduction_ledger (
                user_id, amount, balance_before, balance_after, request_id, token_vendor_cost,
                margin_multiplier, gross_margin, reason, status)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'completed')
            RETURNING id
            """,
            (
                event.user_id, -cost.credits, before, before - cost.credits, event.request_id,
                cost.vendor_cost, cost.margin_multiplier,
                cost.credit_value_usd - cost.vendor_cost, f"api_{event.request_type}"[:50],
            ),
        )  # fmt: skip
        deduction = await cur.fetchone()
        assert deduction is not None
        await cur.execute(
            """
            UPDATE user_credit_balance
            SET amount = amount - %s, last_deduction_at = now(), last_deduction_amount = %s
            WHERE user_id = %s
            """,
            (cost.credits, cost.credits, event.user_id),
        )
        await cur.execute(
            "UPDATE token_usage_ledger SET deduction_record_id = %s WHERE id = %s",
            (deduction[0], usage[0]),
        )
    return True
