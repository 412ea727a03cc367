"""Realized margins against target: `report margins`.

Every request a margin priced in the period (by the UTC day it started; BYOK requests have
no margin and are left out) counts its vendor cost and its billed value (credits in USD;
nothing if its deduction was reversed), grouped by the tier the user had, the provider, the
model, or the pricing config that priced it (`core.pricing.MarginResolver`, as the books
resolve it). The realized gross margin is (billed - vendor cost) / billed. A group has a
target when a monitored, approved config is its own: the config itself, or the config of
exactly that tier, provider or model in effect at the period's end; below it, the group is
flagged.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from uuid import UUID

import psycopg

from pipeline.books.reference import MARGINS_SQL
from pipeline.core.pricing import MarginConfig, MarginResolver
from pipeline.money.report import Report, ReportError

GROUPINGS = ("tier", "provider", "model", "config")
PERCENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class Target:
    config: MarginConfig
    percent: Decimal | None
    monitored: bool


@dataclass
class _Sums:
    requests: int = 0
    vendor_cost: Decimal = Decimal(0)
    billed: Decimal = Decimal(0)


def _percent(part: Decimal, whole: Decimal) -> Decimal | None:
    return None if whole == 0 else (100 * part / whole).quantize(PERCENT, ROUND_HALF_EVEN)


def _own_config(
    targets: list[Target], by: str, key: tuple[Any, ...], at: datetime
) -> Target | None:
    """The approved config of exactly this tier, provider or model in effect at `at`."""
    for t in sorted(targets, key=lambda t: t.config.effective_from, reverse=True):
        c = t.config
        if c.scope_type != by or not c.in_effect(at):
            continue
        if (by == "tier" and c.tier == key[0]) or (by == "provider" and c.provider_id == key[0]):
            return t
        if by == "model" and c.model_id == key[2] and c.provider_id in (None, key[0]):
            return t
    return None


def margins(
    requests: Iterable[tuple[str, UUID, str, str, datetime, Decimal, Decimal]],
    targets: list[Target],
    by: str,
    at: datetime,
) -> Report:
    """Rows of (tier, provider id, provider name, model, started, vendor cost, billed) summed
    per group, with the realized margin and, where the group has one, its target."""
    resolver = MarginResolver([t.config for t in targets])
    by_id = {t.config.id: t for t in targets}
    sums: dict[tuple[Any, ...], _Sums] = defaultdict(_Sums)
    for tier, provider_id, provider, model, started, cost, billed in requests:
        if by == "config":
            config = resolver.resolve(tier, provider_id, model, started)
            key: tuple[Any, ...] = (config.id if config else None,)
        else:
            key = {"tier": (tier,), "provider": (provider_id, provider),
                   "model": (provider_id, provider, model)}[by]  # fmt: skip
        s = sums[key]
        s.requests += 1
        s.vendor_cost += cost
        s.billed += billed
    rows = []
    for key, s in sorted(sums.items(), key=lambda kv: (-kv[1].billed, str(kv[0]))):
        target = by_id.get(key[0]) if by == "config" else _own_config(targets, by, key, at)
        label: tuple[Any, ...]
        if by == "config":
            c = target.config if target else None
            label = (key[0], c.scope_type if c else None, c.tier if c else None,
                     c.model_id if c else None, c.multiplier if c else None)  # fmt: skip
        else:
            label = tuple(k for k in key if not isinstance(k, UUID))
        realized = _percent(s.billed - s.vendor_cost, s.billed)
        goal = target.percent if target and target.monitored else None
        gap = realized - goal if realized is not None and goal is not None else None
        margin = s.billed - s.vendor_cost
        below = gap is not None and gap < 0
        rows.append(
            (*label, s.requests, s.vendor_cost, s.billed, margin, realized, goal, gap, below)
        )
    heads = {"tier": ("tier",), "provider": ("provider",), "model": ("provider", "model"),
             "config": ("config", "scope", "tier", "model", "multiplier")}[by]  # fmt: skip
    columns = (*heads, "requests", "vendor_cost_usd", "billed_usd", "gross_margin_usd",
               "gross_margin_percent", "target_percent", "gap_points", "below_target")  # fmt: skip
    return Report(columns, tuple(rows))


# The shell: PostgreSQL.

# The approved configs as the books read them, with their targets.
_TARGETS = f"""
SELECT m.*, c.target_gross_margin_percent, c.monitored
FROM ({MARGINS_SQL}) AS m JOIN pricing_configs c USING (id)
"""

_REQUESTS = """
SELECT u.user_tier_at_request, u.provider_id, p.name, u.model_id, u.request_started_at,
       u.vendor_cost,
       CASE WHEN d.status = 'reversed' THEN 0 ELSE u.credit_value_usd END
FROM token_usage_ledger u
JOIN providers p ON p.id = u.provider_id
LEFT JOIN credit_deduction_ledger d ON d.id = u.deduction_record_id
WHERE u.request_started_at >= %(from)s AND u.request_started_at < %(to)s
  AND u.margin_multiplier > 0
"""


def margin_report(conn: psycopg.Connection[Any], start: date, end: date, by: str) -> Report:
    """Realized margins of the requests started from `start` to `end` (UTC days, inclusive)."""
    if end < start:
        raise ReportError(f"--to {end} is before --from {start}")
    if by not in GROUPINGS:
        raise ReportError(f"group by one of {', '.join(GROUPINGS)}")
    since = datetime.combine(start, time(), UTC)
    until = datetime.combine(end + timedelta(days=1), time(), UTC)
    with conn.cursor() as cur:
        cur.execute(_TARGETS)
        targets = [Target(MarginConfig(*r[:8]), r[8], r[9]) for r in cur.fetchall()]
    with conn.transaction(), conn.cursor(name="margin_report") as rows:
        rows.execute(_REQUESTS, {"from": since, "to": until})
        return margins(rows, targets, by, until - timedelta(microseconds=1))
