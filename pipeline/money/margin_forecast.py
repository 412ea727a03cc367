"""What a proposed margin multiplier would have done to the last 30 days of requests.

The requests it is based on are those the proposal would price if it were approved: in its
scope, and not priced by a more specific approved config (the approved config of its own
scope is the one it replaces, and a newer config of the same rank wins, as
`core.pricing.resolve_margin` ranks them). Each is charged again at the proposed multiplier
with the pipeline's own rounding (`credits_for`: ceil per request) against what the ledger
says it was charged. The vendor cost of a request does not depend on the margin, so the
change in revenue (billed credits in USD) is also the change in gross margin.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, NamedTuple
from uuid import UUID

import psycopg

from pipeline.books.reference import MARGINS_SQL
from pipeline.core.pricing import SCOPE_RANK, MarginConfig, MarginResolver, credits_for

FORECAST_DAYS = 30
CENTS = Decimal("0.01")


class PricedRequest(NamedTuple):
    """One charged ledger row: what priced it and what it was charged."""

    started_at: datetime
    tier: str
    provider_id: UUID
    model_id: str
    vendor_cost: Decimal
    credits: int


@dataclass(frozen=True, slots=True)
class Forecast:
    requests: int
    charged_credits: int
    proposed_credits: int
    usd_per_credit: Decimal

    @property
    def revenue_impact_usd(self) -> Decimal:
        """Billed value at the proposed multiplier minus billed value as charged, in cents."""
        delta = (self.proposed_credits - self.charged_credits) * self.usd_per_credit
        return delta.quantize(CENTS, rounding=ROUND_HALF_EVEN)

    @property
    def margin_change_usd(self) -> Decimal:
        """The same requests' gross margin change: the vendor cost stays what it was."""
        return self.revenue_impact_usd


def _same_scope(a: MarginConfig, b: MarginConfig) -> bool:
    return (a.scope_type, a.tier, a.provider_id, a.model_id) == (
        b.scope_type, b.tier, b.provider_id, b.model_id
    )  # fmt: skip


def forecast(
    proposal: MarginConfig,
    approved: list[MarginConfig],
    requests: Iterable[PricedRequest],
    usd_per_credit: Decimal,
) -> Forecast:
    """The requests `proposal` would price, were it approved, charged again at its multiplier."""
    others = MarginResolver([c for c in approved if not _same_scope(c, proposal)])
    rank = SCOPE_RANK[proposal.scope_type]
    count = charged = proposed = 0
    for r in requests:
        if not proposal.matches(r.tier, r.provider_id, r.model_id):
            continue
        best = others.resolve(r.tier, r.provider_id, r.model_id, r.started_at)
        if best is not None and SCOPE_RANK[best.scope_type] > rank:
            continue  # a more specific config prices it, now and after the approval
        count += 1
        charged += r.credits
        proposed += credits_for(r.vendor_cost, proposal.multiplier, usd_per_credit)
    return Forecast(count, charged, proposed, usd_per_credit)


# The shell: PostgreSQL.

# Rows a margin priced: BYOK rows have none (multiplier 0), a request of no tokens costs 0.
_REQUESTS = """
SELECT request_started_at, user_tier_at_request, provider_id, model_id, vendor_cost,
       credits_deducted
FROM token_usage_ledger
WHERE request_started_at >= %(since)s AND request_started_at < %(until)s
  AND vendor_cost > 0 AND margin_multiplier > 0
  AND (%(tier)s::text IS NULL OR user_tier_at_request = %(tier)s)
  AND (%(provider_id)s::uuid IS NULL OR provider_id = %(provider_id)s)
  AND (%(model_id)s::text IS NULL OR model_id = %(model_id)s)
"""


def forecast_from_ledger(
    cur: psycopg.Cursor[Any], proposal: MarginConfig, usd_per_credit: Decimal, now: datetime
) -> Forecast:
    """`forecast` over the last FORECAST_DAYS of the ledger before `now` (in the cursor's
    transaction; the rows are streamed, never all held)."""
    since = now - timedelta(days=FORECAST_DAYS)
    cur.execute(MARGINS_SQL)  # the approved configs, as the books read them
    approved = [MarginConfig(*row) for row in cur.fetchall()]
    scope = {"tier": proposal.tier, "provider_id": proposal.provider_id,
             "model_id": proposal.model_id}  # fmt: skip
    assert cur.connection is not None
    with cur.connection.cursor(name="margin_forecast") as rows:
        rows.execute(_REQUESTS, {"since": since, "until": now} | scope)
        requests = (PricedRequest(*row) for row in rows)
        return forecast(proposal, approved, requests, usd_per_credit)
