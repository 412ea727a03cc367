"""A model's price as vendors bill it: components by service tier and prompt size.

Pure and exact (`Decimal`). A `Tariff` is built once per price row from its components
(`model_price_components`) over the seed's four per-1k columns, and prices one request's
`Usage` into `Line`s. The rules, LiteLLM's (1.110.2) wherever it has one:

- **Prompt size.** The tier of a long prompt is chosen by `input_tokens`: all prompt tokens,
  cached and cache-written ones included. A component `above_tokens = N` applies when the
  prompt has more than N tokens; the highest threshold passed wins. A vendor that counts
  "N or more" is stored as N - 1 (the importer does it for xAI).
- **Thresholds that count** are those of the input, output, cache and audio input prices,
  at the standard tier or at the request's own tier.
- **A component's price** is, for the request's tier then the standard tier, the price at
  the highest threshold passed that has one, then the lower ones, then the base price.
- **Missing components fall back**: cache reads and writes, audio and image input to the
  input price; one-hour cache writes to the cache-write price; audio output to the output
  price; reasoning to the tier's output price when the tier has one of its own, else to
  the standard reasoning price, else to the output price. Fees are zero when the model has
  none: web search per query (`web_search`), per request that searched however many
  queries it ran (`web_search_prompt`, Gemini 2.x grounding), per request (`request`).
- **Batch** requests use the batch prices (`service_tier = batch`) at the batch
  thresholds: a missing input-side batch price falls back to the batch input price,
  except cache hits, which keep the standard cache-read price; all output (reasoning and
  audio too) has the batch output price, else half the standard output price. A model
  without a batch input price bills batch requests at half its standard base prices
  (web search and request fees in full).

The cost is the exact sum of the lines, rounded half-even to the ledger's 8 decimals by
the caller.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

from pipeline.core.events import ServiceTier

PER_1K = Decimal(1000)
HALF = Decimal("0.5")


class Component(StrEnum):
    INPUT = "input"
    OUTPUT = "output"
    CACHE_READ = "cache_read"
    CACHE_WRITE = "cache_write"
    CACHE_WRITE_1H = "cache_write_1h"
    REASONING = "reasoning"
    AUDIO_INPUT = "audio_input"
    AUDIO_OUTPUT = "audio_output"
    IMAGE_INPUT = "image_input"
    WEB_SEARCH = "web_search"
    WEB_SEARCH_PROMPT = "web_search_prompt"
    REQUEST = "request"


FALLBACK: Mapping[Component, Component] = {
    Component.CACHE_READ: Component.INPUT,
    Component.CACHE_WRITE: Component.INPUT,
    Component.CACHE_WRITE_1H: Component.CACHE_WRITE,
    Component.AUDIO_INPUT: Component.INPUT,
    Component.IMAGE_INPUT: Component.INPUT,
    Component.AUDIO_OUTPUT: Component.OUTPUT,
    Component.REASONING: Component.OUTPUT,
}
"""The component a missing one is priced as; fees have none (0)."""

OUTPUT_PARTS = frozenset({Component.OUTPUT, Component.REASONING, Component.AUDIO_OUTPUT})
FEES = frozenset({Component.WEB_SEARCH, Component.WEB_SEARCH_PROMPT, Component.REQUEST})
THRESHOLD_COMPONENTS = frozenset(
    {Component.INPUT, Component.OUTPUT, Component.CACHE_READ, Component.CACHE_WRITE,
     Component.CACHE_WRITE_1H, Component.AUDIO_INPUT}
)  # fmt: skip


class Rate(NamedTuple):
    """One `model_price_components` row (USD per token, per query or per request)."""

    component: Component
    tier: ServiceTier
    above_tokens: int
    usd: Decimal


def rates_of(rows: Iterable[Sequence[str]]) -> tuple[Rate, ...]:
    """Components as text (component, tier, above_tokens, usd) as rates, exact."""
    return tuple(
        Rate(Component(c), ServiceTier(tier), int(above), Decimal(usd))
        for c, tier, above, usd in rows
    )


class Counts(Protocol):
    """What one request used, as contract v1 counts it: a `UsageEvent`, or a `Usage`."""

    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def cached_input_tokens(self) -> int: ...
    @property
    def cache_write_tokens(self) -> int: ...
    @property
    def cache_write_1h_tokens(self) -> int: ...
    @property
    def reasoning_tokens(self) -> int: ...
    @property
    def audio_input_tokens(self) -> int: ...
    @property
    def image_input_tokens(self) -> int: ...
    @property
    def audio_output_tokens(self) -> int: ...
    @property
    def web_search_requests(self) -> int: ...
    @property
    def service_tier(self) -> ServiceTier: ...


class Usage(NamedTuple):
    """`Counts` on their own (tests, the oracle)."""

    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    audio_input_tokens: int = 0
    image_input_tokens: int = 0
    audio_output_tokens: int = 0
    web_search_requests: int = 0
    service_tier: ServiceTier = ServiceTier.STANDARD


def is_plain(usage: Counts) -> bool:
    """Only the counts the seed's four prices know, at the standard tier."""
    return (
        usage.service_tier is ServiceTier.STANDARD
        and not usage.cache_write_1h_tokens
        and not usage.reasoning_tokens
        and not usage.audio_input_tokens
        and not usage.image_input_tokens
        and not usage.audio_output_tokens
        and not usage.web_search_requests
    )


def parts(usage: Counts) -> Iterable[tuple[Component, int]]:
    """Each count priced on its own, by the component that prices it."""
    uncached = (
        usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens
        - usage.audio_input_tokens - usage.image_input_tokens
    )  # fmt: skip
    text_output = usage.output_tokens - usage.reasoning_tokens - usage.audio_output_tokens
    return (
        (Component.INPUT, uncached),
        (Component.CACHE_READ, usage.cached_input_tokens),
        (Component.CACHE_WRITE, usage.cache_write_tokens - usage.cache_write_1h_tokens),
        (Component.CACHE_WRITE_1H, usage.cache_write_1h_tokens),
        (Component.AUDIO_INPUT, usage.audio_input_tokens),
        (Component.IMAGE_INPUT, usage.image_input_tokens),
        (Component.OUTPUT, text_output),
        (Component.REASONING, usage.reasoning_tokens),
        (Component.AUDIO_OUTPUT, usage.audio_output_tokens),
        (Component.WEB_SEARCH, usage.web_search_requests),
        (Component.WEB_SEARCH_PROMPT, 1 if usage.web_search_requests else 0),
        (Component.REQUEST, 1 if usage.input_tokens or usage.output_tokens else 0),
    )


class Line(NamedTuple):
    """One priced part of a request: `units` of `part`, at the price of `rate`."""

    part: Component
    units: int
    rate: Rate

    @property
    def usd(self) -> Decimal:
        return self.units * self.rate.usd


ZERO_RATE = {c: Rate(c, ServiceTier.STANDARD, 0, Decimal(0)) for c in Component}


class Tariff:
    """The components of one price row, indexed for pricing many requests."""

    __slots__ = ("_rates", "_thresholds", "base", "plain_limit")

    def __init__(self, rates: Iterable[Rate]) -> None:
        self._rates: dict[tuple[Component, ServiceTier, int], Rate] = {
            (r.component, r.tier, r.above_tokens): r for r in rates
        }
        self._thresholds: dict[ServiceTier, tuple[int, ...]] = {}
        standard = self._tier_thresholds(ServiceTier.STANDARD)
        fee = self._own(Component.REQUEST, ServiceTier.STANDARD, ()) is not None
        self.plain_limit = -1 if fee else standard[-1] if standard else 2**31
        """A plain request (`is_plain`) with at most this many prompt tokens costs its
        tokens at the `base` prices: the lowest standard threshold; -1 with a request fee."""
        self.base = tuple(
            self.rate(c, ServiceTier.STANDARD, ()).usd
            for c in (Component.INPUT, Component.OUTPUT, Component.CACHE_READ,
                      Component.CACHE_WRITE)
        )  # fmt: skip
        """Standard base USD per token of input, output, cache read, cache write."""

    @classmethod
    def of(
        cls,
        input_per_1k: Decimal,
        output_per_1k: Decimal,
        cache_write_per_1k: Decimal | None,
        cache_read_per_1k: Decimal | None,
        components: Iterable[Rate] = (),
    ) -> Tariff:
        """The seed's four columns as standard base rates, refined and extended by the
        components (a component replaces the column it rounds)."""
        seed = [
            Rate(c, ServiceTier.STANDARD, 0, per_1k / PER_1K)
            for c, per_1k in (
                (Component.INPUT, input_per_1k), (Component.OUTPUT, output_per_1k),
                (Component.CACHE_WRITE, cache_write_per_1k),
                (Component.CACHE_READ, cache_read_per_1k),
            )
            if per_1k is not None
        ]  # fmt: skip
        return cls([*seed, *components])

    def _tier_thresholds(self, tier: ServiceTier) -> tuple[int, ...]:
        """The thresholds that count at `tier`, highest first."""
        found = self._thresholds.get(tier)
        if found is None:
            tiers = (tier,) if tier is ServiceTier.BATCH else (tier, ServiceTier.STANDARD)
            counted = {
                above
                for (component, t, above) in self._rates
                if above and t in tiers and component in THRESHOLD_COMPONENTS
            }
            found = self._thresholds[tier] = tuple(sorted(counted, reverse=True))
        return found

    def passed(self, tier: ServiceTier, prompt_tokens: int) -> tuple[int, ...]:
        """The thresholds a prompt of `prompt_tokens` passes at `tier`, highest first."""
        return tuple(t for t in self._tier_thresholds(tier) if prompt_tokens > t)

    def _own(self, component: Component, tier: ServiceTier, passed: tuple[int, ...]) -> Rate | None:
        tiers = (
            (tier,)
            if tier is ServiceTier.STANDARD or tier is ServiceTier.BATCH
            else (tier, ServiceTier.STANDARD)
        )
        for above in (*passed, 0):
            for t in tiers:
                rate = self._rates.get((component, t, above))
                if rate is not None:
                    return rate
        return None

    def rate(self, component: Component, tier: ServiceTier, passed: tuple[int, ...]) -> Rate:
        """The price of `component` for a request at `tier` (not batch) past the `passed`
        thresholds."""
        if component is Component.REASONING and tier is not ServiceTier.STANDARD:
            own = self._own(component, tier, passed)
            if own is not None and own.tier is tier:
                return own
            if self._rates.get((Component.OUTPUT, tier, 0)) is not None:
                return self.rate(Component.OUTPUT, tier, passed)
        own = self._own(component, tier, passed)
        if own is not None:
            return own
        fallback = FALLBACK.get(component)
        if fallback is not None:
            return self.rate(fallback, tier, passed)
        return ZERO_RATE[component]

    def batch_rate(self, component: Component, prompt_tokens: int) -> Rate:
        """The price of `component` for a batch request of a model with batch prices.

        Input-side parts have their batch price, else the batch input price, except cache
        hits, which keep the standard cache-read price when there is no batch one; output
        of every kind has the batch output price, else half the standard output price.
        """
        passed = self.passed(ServiceTier.BATCH, prompt_tokens)
        if component in OUTPUT_PARTS:
            own = self._own(Component.OUTPUT, ServiceTier.BATCH, passed)
            return (
                own
                if own is not None
                else _halved(self.rate(Component.OUTPUT, ServiceTier.STANDARD, ()))
            )
        own = self._own(component, ServiceTier.BATCH, passed)
        if own is not None:
            return own
        if component is Component.CACHE_READ:
            standard = self._own(
                component, ServiceTier.STANDARD, self.passed(ServiceTier.STANDARD, prompt_tokens)
            )
            if standard is not None:
                return standard
        fallback = FALLBACK.get(component)
        if fallback is not None:
            return self.batch_rate(fallback, prompt_tokens)
        return self.rate(component, ServiceTier.STANDARD, ())

    def lines(self, usage: Counts) -> list[Line]:
        """The priced parts of `usage` (parts of zero units left out)."""
        tier = usage.service_tier
        priced = [
            (part, units)
            for part, units in parts(usage)
            if units and (part not in FEES or self._has_fee(part))
        ]
        if tier is not ServiceTier.BATCH:
            passed = self.passed(tier, usage.input_tokens)
            return [Line(part, units, self.rate(part, tier, passed)) for part, units in priced]
        if self._rates.get((Component.INPUT, ServiceTier.BATCH, 0)) is None:
            # No batch prices: half the standard base prices (web search and fees in full).
            standard = ServiceTier.STANDARD
            return [
                Line(part, units, self._halved_unless_fee(self.rate(part, standard, ())))
                for part, units in priced
            ]
        return [Line(part, units, self.batch_rate(part, usage.input_tokens))
                for part, units in priced]  # fmt: skip

    def _has_fee(self, fee: Component) -> bool:
        return any(c is fee for c, _, _ in self._rates)

    @staticmethod
    def _halved_unless_fee(rate: Rate) -> Rate:
        return rate if rate.component in FEES else _halved(rate)


def _halved(rate: Rate) -> Rate:
    return Rate(rate.component, ServiceTier.BATCH, rate.above_tokens, rate.usd * HALF)


Breakdown = dict[str, Any]


def breakdown(usage: Counts, lines: list[Line], total: Decimal) -> Breakdown:
    """The ledger's `price_breakdown`: what the charge was made of (JSON; exact decimals as
    strings)."""
    return {
        "service_tier": usage.service_tier.value,
        "prompt_tokens": usage.input_tokens,
        "usd": str(total),
        "lines": [
            {
                "part": line.part.value,
                "units": line.units,
                "priced_as": line.rate.component.value,
                "service_tier": line.rate.tier.value,
                "above_tokens": line.rate.above_tokens,
                "usd_per_unit": str(line.rate.usd),
                "usd": str(line.usd),
            }
            for line in lines
        ],
    }
