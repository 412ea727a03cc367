"""LiteLLM's model price map, parsed into our price rows (pure: no database).

Only chat and completion models are kept. Each becomes the seed's four per-1k columns
(rounded to their NUMERIC(10,8)) and its components at the catalog's full precision: every
price the map gives for a count contract v1 knows, by service tier and prompt threshold
(`COMPONENT_KEYS`; the key grammar is `<price>[_above_<N>[k]_tokens][_<tier>]`). Pricing
uses the components, so a rounded column never moves a charge.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

from pipeline.core.events import ServiceTier
from pipeline.core.tariff import Component, Rate
from pipeline.errors import PipelineError


class PriceError(PipelineError):
    """A price that cannot be recorded: unknown provider, bad value, out of order."""


PER_1K = Decimal(1000)
PRICE_EXPONENT = Decimal("0.00000001")  # NUMERIC(10,8) of model_provider_pricing
MAX_PRICE = Decimal("99.99999999")
MAX_COMPONENT = Decimal(1000)  # model_price_components.usd_per_unit < 1000
CHAT_MODES = frozenset({"chat", "completion"})
INCLUSIVE_THRESHOLDS = frozenset({"xai"})
"""Providers whose long-prompt price starts at N tokens rather than above N (LiteLLM's
`_INCLUSIVE_THRESHOLD_PROVIDERS`): stored as above N - 1."""

COMPONENT_KEYS: Mapping[str, Component] = {
    "input_cost_per_token": Component.INPUT,
    "output_cost_per_token": Component.OUTPUT,
    "cache_read_input_token_cost": Component.CACHE_READ,
    "cache_creation_input_token_cost": Component.CACHE_WRITE,
    "cache_creation_input_token_cost_above_1hr": Component.CACHE_WRITE_1H,
    "output_cost_per_reasoning_token": Component.REASONING,
    "input_cost_per_audio_token": Component.AUDIO_INPUT,
    "output_cost_per_audio_token": Component.AUDIO_OUTPUT,
    "input_cost_per_image_token": Component.IMAGE_INPUT,
    "input_cost_per_request": Component.REQUEST,
}
TIER_SUFFIXES: Mapping[str, ServiceTier] = {
    "batches": ServiceTier.BATCH, "flex": ServiceTier.FLEX, "priority": ServiceTier.PRIORITY,
}  # fmt: skip
_KEY = re.compile(
    "^(?P<price>"
    + "|".join(sorted(map(re.escape, COMPONENT_KEYS), key=len, reverse=True))
    + r")(?:_above_(?P<n>\d+)(?P<k>k?)_tokens)?(?:_(?P<tier>"
    + "|".join(TIER_SUFFIXES)
    + "))?$"
)
WEB_SEARCH_KEY = "search_context_cost_per_query"
WEB_SEARCH_SIZE = "search_context_size_medium"
"""LiteLLM bills a web search query at the medium context size unless told otherwise..."""
WEB_SEARCH_SIZES: Mapping[str, str] = {"perplexity": "search_context_size_low"}
"""...but Perplexity's at the low one, its API's default `search_context_size`."""
FIREWORKS_CACHE_READ_RATIO = Decimal("0.5")
"""Fireworks bills cache hits at half the input price; LiteLLM applies it to every
fireworks_ai model the map gives no cache-read price (its
FIREWORKS_AI_DEFAULT_CACHE_READ_RATE_RATIO)."""
GOOGLE_GROUNDING = Decimal("0.035")
"""Google's list price of grounding with Google Search ($35 per 1,000), which LiteLLM bills
for a gemini or vertex_ai model the map gives no search price (llms/gemini/cost_calculator.py)."""
XAI_WEB_SEARCH = Decimal("0.005")
"""xAI's list price of a web search call ($5 per 1,000), which LiteLLM bills for an xai
model the map gives no search price (llms/xai/cost_calculator.py)."""

# LiteLLM provider -> (api_type, name) of the provider the seed creates for it.
SEEDED_PROVIDERS: Mapping[str, tuple[str, str]] = {
    "openai": ("openai", "OpenAI"),
    "anthropic": ("anthropic", "Anthropic"),
    "gemini": ("google", "Google"),
    "vertex_ai": ("google", "Google"),
    "azure": ("azure", "Azure OpenAI"),
}


@dataclass(frozen=True, slots=True)
class PriceRow:
    """The prices of one model in USD per 1,000 tokens."""

    input_per_1k: Decimal
    output_per_1k: Decimal
    cache_input_per_1k: Decimal | None = None
    cache_hit_per_1k: Decimal | None = None

    components: tuple[Rate, ...] = ()
    """Exact prices (`model_price_components`), in a canonical order."""

    def values(self) -> tuple[Decimal | None, ...]:
        return (self.input_per_1k, self.output_per_1k, self.cache_input_per_1k,
                self.cache_hit_per_1k)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ProviderRef:
    """Our provider for a catalog entry: found by api_type, created with `name` if missing."""

    api_type: str
    name: str


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    provider: ProviderRef
    model_name: str
    vendor_model_id: str
    price: PriceRow


@dataclass(frozen=True, slots=True)
class Catalog:
    entries: tuple[CatalogEntry, ...]
    skipped: Mapping[str, int]
    """Entries left out, by reason."""


def exact_price(value: Any) -> Decimal | None:
    """A catalog price as the exact decimal written in the map; None if not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    return Decimal(str(value))


def components_of(spec: Mapping[str, Any]) -> tuple[Rate, ...] | str:
    """The components of one catalog entry, or why one is unusable."""
    provider = str(spec.get("litellm_provider"))
    inclusive = provider in INCLUSIVE_THRESHOLDS
    rates = []
    for key, value in spec.items():
        match = _KEY.match(key)
        if match is None:
            continue
        usd = exact_price(value)
        if usd is None:
            continue
        above = 0
        if match["n"] is not None:
            above = int(match["n"]) * (1000 if match["k"] else 1) - (1 if inclusive else 0)
        tier = TIER_SUFFIXES[match["tier"]] if match["tier"] else ServiceTier.STANDARD
        rates.append(Rate(COMPONENT_KEYS[match["price"]], tier, above, usd))
    rates = list({(r.component, r.tier, r.above_tokens): r
                  for r in (*rates, *tiered_of(spec))}.values())  # fmt: skip
    rates.extend(web_search_of(spec))
    rates.extend(vendor_defaults(provider, rates))
    if any(not r.usd.is_finite() or r.usd < 0 for r in rates):
        return "negative_price"
    if any(r.usd >= MAX_COMPONENT for r in rates):
        return "price_too_large"
    return canonical(rates)


def tiered_of(spec: Mapping[str, Any]) -> list[Rate]:
    """A `tiered_pricing` table (Qwen, Doubao...): each range `[start, end]` prices a prompt
    of more than `start` tokens, every token of it, so its prices are the components above
    `start`; the first range's are the base prices, and they replace the entry's own."""
    tiers = spec.get("tiered_pricing")
    rates = []
    for tier in tiers if isinstance(tiers, list) else ():
        span = tier.get("range") if isinstance(tier, Mapping) else None
        start = exact_price(span[0]) if isinstance(span, list) and span else None
        if start is None or start != start.to_integral_value() or start < 0:
            continue
        for key, value in tier.items():
            usd = exact_price(value)
            if key in COMPONENT_KEYS and usd is not None:
                rates.append(Rate(COMPONENT_KEYS[key], ServiceTier.STANDARD, int(start), usd))
    return rates


def web_search_of(spec: Mapping[str, Any]) -> list[Rate]:
    """The web search price of an entry: per query at the default context size; Google's
    grounding (gemini and vertex_ai models but Anthropic's) at that price or GOOGLE_GROUNDING, per
    query where the entry says `per_query` (Gemini 3.x), else per prompt (Gemini 2.x)."""
    provider = str(spec.get("litellm_provider"))
    search = spec.get(WEB_SEARCH_KEY)
    size = WEB_SEARCH_SIZES.get(provider, WEB_SEARCH_SIZE)
    usd = exact_price(search.get(size)) if isinstance(search, Mapping) else None
    google = provider == "gemini" or provider.startswith("vertex_ai")
    if not google or provider == "vertex_ai-anthropic_models":
        return [Rate(Component.WEB_SEARCH, ServiceTier.STANDARD, 0, usd)] if usd else []
    per_query = spec.get("web_search_billing_unit") == "per_query"
    component = Component.WEB_SEARCH if per_query else Component.WEB_SEARCH_PROMPT
    return [Rate(component, ServiceTier.STANDARD, 0, GOOGLE_GROUNDING if usd is None else usd)]


def vendor_defaults(provider: str, rates: list[Rate]) -> list[Rate]:
    """The prices a vendor bills that the map leaves to LiteLLM's code: Fireworks' cache
    hits at half the input price, xAI's web search calls."""
    base = {
        r.component: r.usd for r in rates if r.tier is ServiceTier.STANDARD and not r.above_tokens
    }
    if provider == "fireworks_ai" and Component.CACHE_READ not in base and Component.INPUT in base:
        half = base[Component.INPUT] * FIREWORKS_CACHE_READ_RATIO
        return [Rate(Component.CACHE_READ, ServiceTier.STANDARD, 0, half)]
    if provider == "xai" and Component.WEB_SEARCH not in base:
        return [Rate(Component.WEB_SEARCH, ServiceTier.STANDARD, 0, XAI_WEB_SEARCH)]
    return []


SEED_COLUMNS = (Component.INPUT, Component.OUTPUT, Component.CACHE_WRITE, Component.CACHE_READ)


def beyond_columns(price: PriceRow, rates: Iterable[Rate]) -> tuple[Rate, ...]:
    """`rates` without those the seed's columns of `price` already hold exactly, in
    canonical order: a price the four columns express has no components."""
    held = {
        (c, column / PER_1K)
        for c, column in zip(SEED_COLUMNS, price.values(), strict=True)
        if column is not None
    }
    standard = ServiceTier.STANDARD
    return canonical(
        r for r in rates
        if not (r.tier is standard and not r.above_tokens and (r.component, r.usd) in held)
    )  # fmt: skip


def canonical(rates: Iterable[Rate]) -> tuple[Rate, ...]:
    """Rates in one order, so two equal prices compare equal."""
    return tuple(sorted(rates, key=lambda r: (r.component, r.tier, r.above_tokens)))


def seed_column(rates: tuple[Rate, ...], component: Component) -> Decimal | str | None:
    """The seed's per-1k column for a standard base component, rounded half-even to its
    NUMERIC(10,8) (prices come from the exact component); None without one; a skip
    reason if the column cannot hold it."""
    usd = next(
        (r.usd for r in rates
         if r.component is component and r.tier is ServiceTier.STANDARD and not r.above_tokens),
        None,
    )  # fmt: skip
    if usd is None:
        return None
    if usd * PER_1K > MAX_PRICE:
        return "price_too_large"
    return (usd * PER_1K).quantize(PRICE_EXPONENT, rounding=ROUND_HALF_EVEN)


def provider_for(litellm_provider: str) -> ProviderRef:
    family = "vertex_ai" if litellm_provider.startswith("vertex_ai") else litellm_provider
    api_type, name = SEEDED_PROVIDERS.get(family, (litellm_provider, litellm_provider))
    return ProviderRef(api_type, name)


def model_name_for(key: str, litellm_provider: str) -> str:
    """The catalog key without its provider prefix ("azure/gpt-4o" -> "gpt-4o")."""
    prefix, sep, rest = key.partition("/")
    family = "vertex_ai" if litellm_provider.startswith("vertex_ai") else litellm_provider
    return rest if sep and rest and prefix in (litellm_provider, family) else key


def parse_entry(key: str, spec: Any) -> CatalogEntry | str:
    """One catalog entry, or the reason it is skipped."""
    if not isinstance(spec, Mapping):
        return "not_an_entry"
    if spec.get("mode") not in CHAT_MODES:
        return "not_chat_model"
    provider = spec.get("litellm_provider")
    if not isinstance(provider, str) or not provider:
        return "no_provider"
    rates = components_of(spec)
    if isinstance(rates, str):
        return rates
    columns = [
        seed_column(rates, c)
        for c in (Component.INPUT, Component.OUTPUT, Component.CACHE_WRITE, Component.CACHE_READ)
    ]
    problem = next((c for c in columns if isinstance(c, str)), None)
    if problem is not None:
        return problem
    input_price, output_price, cache_input, cache_hit = columns
    if not isinstance(input_price, Decimal) or not isinstance(output_price, Decimal):
        return "missing_price"
    assert not isinstance(cache_input, str) and not isinstance(cache_hit, str)
    model = model_name_for(key, provider)
    if len(model) > 255 or len(key) > 255:
        return "name_too_long"
    price = PriceRow(input_price, output_price, cache_input, cache_hit)
    price = replace(price, components=beyond_columns(price, rates))
    return CatalogEntry(provider_for(provider), model, key, price)


def parse_litellm(catalog: Mapping[str, Any]) -> Catalog:
    """The chat/completion prices of a LiteLLM model price map, and what was skipped.

    Two keys naming the same model of the same provider (gemini and vertex_ai both map
    to Google) keep the first in catalog order.
    """
    entries: list[CatalogEntry] = []
    seen: set[tuple[str, str]] = set()
    skipped: Counter[str] = Counter()
    for key, spec in catalog.items():
        parsed = parse_entry(key, spec)
        if isinstance(parsed, str):
            skipped[parsed] += 1
            continue
        identity = (parsed.provider.api_type, parsed.model_name)
        if identity in seen:
            skipped["duplicate_model"] += 1
            continue
        seen.add(identity)
        entries.append(parsed)
    return Catalog(tuple(entries), dict(sorted(skipped.items())))


def load_litellm(path: Path) -> Catalog:
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
    except (OSError, ValueError) as exc:
        raise PriceError(f"cannot read price catalog {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise PriceError(f"{path} is not a LiteLLM model price map (a JSON object)")
    return parse_litellm(data)
