"""Pricing: the vendor price in effect, the margin that applies, and the credits charged
(`price_event` chains the three for one request).

Pure functions over reference rows loaded by the caller. Money is `Decimal` throughout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal
from typing import NamedTuple
from uuid import UUID

from pipeline.core.events import Rejection, UsageEvent
from pipeline.errors import Reason

PER_TOKENS = Decimal(1000)
VENDOR_COST_EXPONENT = Decimal("0.00000001")  # NUMERIC(10,8) of token_usage_ledger.vendor_cost
MAX_VENDOR_COST = Decimal("99.99999999")
SCOPE_RANK = {"combination": 4, "model": 3, "provider": 2, "tier": 1}


@dataclass(frozen=True, slots=True)
class Price:
    """One row of `model_provider_pricing` (prices per 1,000 tokens)."""

    provider_id: UUID
    model_name: str
    input_per_1k: Decimal
    output_per_1k: Decimal
    cache_input_per_1k: Decimal | None
    cache_hit_per_1k: Decimal | None
    effective_from: datetime
    effective_until: datetime | None

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


class TokenCounts(NamedTuple):
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int


class Charge(NamedTuple):
    """What one request costs us and what it costs the user."""

    vendor_cost: Decimal
    margin_multiplier: Decimal
    credits: int
    credit_value_usd: Decimal


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


def vendor_cost(tokens: TokenCounts, price: Price) -> Decimal:
    """USD cost at the vendor, rounded half-even to the ledger's 8 decimals.

    Uncached input at the input price, cache hits at the cache-hit price, cache writes at
    the cache-input price (input price when a cache price is unset), output at the output
    price.
    """
    uncached = tokens.input_tokens - tokens.cached_input_tokens - tokens.cache_write_tokens
    hit_price = price.cache_hit_per_1k if price.cache_hit_per_1k is not None else price.input_per_1k
    write_price = (
        price.cache_input_per_1k if price.cache_input_per_1k is not None else price.input_per_1k
    )
    exact = uncached * price.input_per_1k + tokens.output_tokens * price.output_per_1k
    if tokens.cached_input_tokens:
        exact += tokens.cached_input_tokens * hit_price
    if tokens.cache_write_tokens:
        exact += tokens.cache_write_tokens * write_price
    exact /= PER_TOKENS
    return exact.quantize(VENDOR_COST_EXPONENT, rounding=ROUND_HALF_EVEN)


def credits_for(cost: Decimal, multiplier: Decimal, usd_per_credit: Decimal) -> int:
    """ceil(vendor_cost x margin / USD_PER_CREDIT); zero cost gives zero credits."""
    if cost <= 0:
        return 0
    return int((cost * multiplier / usd_per_credit).to_integral_value(rounding=ROUND_CEILING))


def charge(
    tokens: TokenCounts, price: Price, multiplier: Decimal, usd_per_credit: Decimal
) -> Charge:
    cost = vendor_cost(tokens, price)
    credits = credits_for(cost, multiplier, usd_per_credit)
    return Charge(
        vendor_cost=cost,
        margin_multiplier=multiplier,
        credits=credits,
        credit_value_usd=credits * usd_per_credit,
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
    tokens = TokenCounts(
        event.input_tokens, event.output_tokens, event.cached_input_tokens, event.cache_write_tokens
    )
    cost = charge(tokens, price, margin.multiplier, usd_per_credit)
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
