"""Pricing: the vendor price in effect, the margin that applies, and the credits charged
(`price_event` chains the three for one request).

Pure functions over reference rows loaded by the caller. Money is `Decimal` throughout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal
from typing import NamedTuple
from uuid import UUID

from pipeline.core.events import Rejection, UsageEvent
from pipeline.core.tariff import Breakdown, Counts, Rate, Tariff, breakdown, is_plain
from pipeline.errors import Reason

VENDOR_COST_EXPONENT = Decimal("0.00000001")  # NUMERIC(10,8) of token_usage_ledger.vendor_cost
MAX_VENDOR_COST = Decimal("99.99999999")
SCOPE_RANK = {"combination": 4, "model": 3, "provider": 2, "tier": 1}


@dataclass(frozen=True, slots=True)
class Price:
    """One row of `model_provider_pricing` (the seed's prices per 1,000 tokens) with its
    components (`model_price_components`), which refine and extend them."""

    provider_id: UUID
    model_name: str
    input_per_1k: Decimal
    output_per_1k: Decimal
    cache_input_per_1k: Decimal | None
    cache_hit_per_1k: Decimal | None
    effective_from: datetime
    effective_until: datetime | None
    components: tuple[Rate, ...] = ()
    tariff: Tariff = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tariff = Tariff.of(
            self.input_per_1k, self.output_per_1k, self.cache_input_per_1k,
            self.cache_hit_per_1k, self.components,
        )  # fmt: skip
        object.__setattr__(self, "tariff", tariff)

    def in_effect(self, at: datetime) -> bool:
        return self.effective_from <= at and (
            self.effective_until is None or at < self.effective_until
        )


@dataclass(frozen=True, slots=True)
class MarginConfig:
    """One approved, active row of `pricing_configs`."""

    id: UUID
    scope_type: str
    tier: str | None
    provider_id: UUID | None
    model_id: str | None
    multiplier: Decimal
    effective_from: datetime
    effective_until: datetime | None

    def in_effect(self, at: datetime) -> bool:
        return self.effective_from <= at and (
            self.effective_until is None or at < self.effective_until
        )

    def matches(self, tier: str, provider_id: UUID, model: str) -> bool:
        """Every scope field the config sets must equal the request's."""
        if self.scope_type not in SCOPE_RANK:
            return False
        checks = (
            (self.tier, tier),
            (self.provider_id, provider_id),
            (self.model_id, model),
        )
        set_fields = [(mine, theirs) for mine, theirs in checks if mine is not None]
        return bool(set_fields) and all(mine == theirs for mine, theirs in set_fields)


class Charge(NamedTuple):
    """What one request costs us and what it costs the user."""

    vendor_cost: Decimal
    margin_multiplier: Decimal
    credits: int
    credit_value_usd: Decimal
    breakdown: Breakdown | None = None
    """What the vendor cost was made of (`tariff.breakdown`), unless the standard tier's
    base prices explain it."""


def price_in_effect(prices: list[Price], at: datetime) -> Price | None:
    """The price of one model at `at`; the latest `effective_from` wins an overlap."""
    best = None
    for price in prices:
        if price.in_effect(at) and (best is None or price.effective_from > best.effective_from):
            best = price
    return best


def resolve_margin(
    configs: list[MarginConfig], tier: str, provider_id: UUID, model: str, at: datetime
) -> MarginConfig | None:
    """Most specific matching config: combination > model > provider > tier; then newest."""
    return _first_in_effect(_by_specificity(configs, tier, provider_id, model), at)


class MarginResolver:
    """`resolve_margin` over one list of configs, matching and ranking each scope once.

    A batch asks for the same few (tier, provider, model) scopes thousands of times;
    only the time check depends on the request.
    """

    def __init__(self, configs: list[MarginConfig]) -> None:
        self._configs = configs
        self._by_scope: dict[tuple[str, UUID, str], list[MarginConfig]] = {}

    def resolve(
        self, tier: str, provider_id: UUID, model: str, at: datetime
    ) -> MarginConfig | None:
        scope = (tier, provider_id, model)
        ranked = self._by_scope.get(scope)
        if ranked is None:
            ranked = self._by_scope[scope] = _by_specificity(self._configs, *scope)
        return _first_in_effect(ranked, at)


def _by_specificity(
    configs: list[MarginConfig], tier: str, provider_id: UUID, model: str
) -> list[MarginConfig]:
    """The configs matching the scope, most specific first, then newest (then by id)."""
    matching = [c for c in configs if c.matches(tier, provider_id, model)]
    return sorted(
        matching,
        key=lambda c: (SCOPE_RANK[c.scope_type], c.effective_from, str(c.id)),
        reverse=True,
    )


def _first_in_effect(ranked: list[MarginConfig], at: datetime) -> MarginConfig | None:
    for config in ranked:
        if config.in_effect(at):
            return config
    return None


class VendorCost(NamedTuple):
    usd: Decimal
    """Rounded half-even to the ledger's 8 decimals."""
    breakdown: Breakdown | None


def vendor_cost(usage: Counts, price: Price) -> VendorCost:
    """USD cost at the vendor (`pipeline.core.tariff` has the rules).

    A plain request (standard tier, the seed's four counts, a prompt below the model's
    long-context thresholds, no request fee) is priced directly from the base prices, and
    needs no breakdown: uncached input at the input price, cache hits at the cache-read price, cache
    writes at the cache-write price, output at the output price.
    """
    tariff = price.tariff
    if usage.input_tokens <= tariff.plain_limit and is_plain(usage):
        input_usd, output_usd, read_usd, write_usd = tariff.base
        uncached = usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens
        exact = uncached * input_usd + usage.output_tokens * output_usd
        if usage.cached_input_tokens:
            exact += usage.cached_input_tokens * read_usd
        if usage.cache_write_tokens:
            exact += usage.cache_write_tokens * write_usd
        return VendorCost(exact.quantize(VENDOR_COST_EXPONENT, rounding=ROUND_HALF_EVEN), None)
    lines = tariff.lines(usage)
    exact = sum((line.usd for line in lines), Decimal(0))
    return VendorCost(
        exact.quantize(VENDOR_COST_EXPONENT, rounding=ROUND_HALF_EVEN),
        breakdown(usage, lines, exact),
    )


def credits_for(cost: Decimal, multiplier: Decimal, usd_per_credit: Decimal) -> int:
    """ceil(vendor_cost x margin / USD_PER_CREDIT); zero cost gives zero credits."""
    if cost <= 0:
        return 0
    return int((cost * multiplier / usd_per_credit).to_integral_value(rounding=ROUND_CEILING))


def charge(usage: Counts, price: Price, multiplier: Decimal, usd_per_credit: Decimal) -> Charge:
    cost = vendor_cost(usage, price)
    credits = credits_for(cost.usd, multiplier, usd_per_credit)
    return Charge(
        vendor_cost=cost.usd,
        margin_multiplier=multiplier,
        credits=credits,
        credit_value_usd=credits * usd_per_credit,
        breakdown=cost.breakdown,
    )


MarginOf = Callable[[str, UUID, str, datetime], MarginConfig | None]
"""(tier, provider id, model, at) -> the margin config that applies, if any."""


def price_event(
    event: UsageEvent,
    provider_id: UUID,
    tier: str,
    prices: list[Price],
    margin_of: MarginOf,
    usd_per_credit: Decimal,
) -> Charge | Rejection:
    """What one request costs: the vendor price in effect when it started, the margin
    that applies to it, the credits; or why it cannot be charged."""
    at = event.started_at
    price = price_in_effect(prices, at)
    if price is None:
        return Rejection(
            Reason.UNKNOWN_MODEL,
            f"no price for {event.provider}/{event.model} at {at.isoformat()}",
        )
    margin = margin_of(tier, provider_id, event.model, at)
    if margin is None:
        return Rejection(
            Reason.NO_PRICING_CONFIG,
            f"no approved margin for tier {tier}, {event.provider}/{event.model} "
            f"at {at.isoformat()}",
        )
    cost = charge(event, price, margin.multiplier, usd_per_credit)
    if cost.vendor_cost > MAX_VENDOR_COST or cost.credit_value_usd > MAX_VENDOR_COST:
        return Rejection(
            Reason.COST_OUT_OF_RANGE,
            f"cost {cost.vendor_cost} USD exceeds the ledger's range ({MAX_VENDOR_COST})",
        )
    return cost


FREE_CHARGE = Charge(
    vendor_cost=Decimal(0), margin_multiplier=Decimal(0), credits=0, credit_value_usd=Decimal(0)
)
"""What a BYOK request costs: the user pays the vendor with their own key."""
