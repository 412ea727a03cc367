"""Daily rollups: the summary-row increments of newly booked ledger rows.

Increments are computed from exactly the rows a transaction inserts, so a replay (whose
rows are all duplicates) adds nothing. Day = UTC day of the request's `started_at`.
Averages and rates are derived in SQL from the stored sums, never averaged twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING
from uuid import UUID

if TYPE_CHECKING:  # plan.py holds a batch's rollups, computed here
    from pipeline.core.plan import UsageRow


@dataclass(slots=True)
class UserDay:
    """Increment of one `token_usage_daily_summary` / `credit_usage_daily_summary` row."""

    requests: int = 0
    successful_requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    processing_time_ms: int = 0
    vendor_cost: Decimal = Decimal(0)
    credits: int = 0
    gross_margin: Decimal = Decimal(0)
    deductions: int = 0
    """Requests that produced a credit deduction."""
    deducted_vendor_cost: Decimal = Decimal(0)
    deducted_gross_margin: Decimal = Decimal(0)


@dataclass(slots=True)
class ModelDay:
    """Increment of one `model_usage_daily_summary` row (no user: safe for finance)."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    vendor_cost: Decimal = Decimal(0)
    credits: int = 0
    credit_value_usd: Decimal = Decimal(0)
    gateway_costed_requests: int = 0
    """Requests whose gateway reported its own cost (`gateway_cost_usd`)."""
    gateway_cost_usd: Decimal = Decimal(0)
    gateway_costed_vendor_cost: Decimal = Decimal(0)
    """Our vendor cost of those same requests."""


def user_days(rows: Iterable[UsageRow]) -> dict[tuple[UUID, date], UserDay]:
    totals: dict[tuple[UUID, date], UserDay] = {}
    for row in rows:
        key = (row.user_id, row.usage_date)
        day = totals.get(key)
        if day is None:
            day = totals[key] = UserDay()
        margin = row.credit_value_usd - row.vendor_cost
        day.requests += 1
        day.successful_requests += row.status == "success"
        day.input_tokens += row.input_tokens
        day.output_tokens += row.output_tokens
        day.processing_time_ms += row.processing_time_ms
        day.vendor_cost += row.vendor_cost
        day.credits += row.credits_deducted
        day.gross_margin += margin
        if row.deduction_record_id is not None:
            day.deductions += 1
            day.deducted_vendor_cost += row.vendor_cost
            day.deducted_gross_margin += margin
    return totals


def model_days(rows: Iterable[UsageRow]) -> dict[tuple[date, UUID, str], ModelDay]:
    totals: dict[tuple[date, UUID, str], ModelDay] = {}
    for row in rows:
        key = (row.usage_date, row.provider_id, row.model_id)
        day = totals.get(key)
        if day is None:
            day = totals[key] = ModelDay()
        day.requests += 1
        day.input_tokens += row.input_tokens
        day.output_tokens += row.output_tokens
        day.cached_input_tokens += row.cached_input_tokens
        day.cache_write_tokens += row.cache_write_tokens
        day.vendor_cost += row.vendor_cost
        day.credits += row.credits_deducted
        day.credit_value_usd += row.credit_value_usd
        if row.gateway_cost_usd is not None:
            day.gateway_costed_requests += 1
            day.gateway_cost_usd += row.gateway_cost_usd
            day.gateway_costed_vendor_cost += row.vendor_cost
    return totals
