"""LiteLLM's model price map, parsed into our price rows (pure: no database).

Only chat and completion models are kept; a price that NUMERIC(10,8) cannot hold exactly
enough is skipped with its reason, never rounded into a different price.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError


class PriceError(PipelineError):
    """A price that cannot be recorded: unknown provider, bad value, out of order."""


PER_1K = Decimal(1000)
PRICE_EXPONENT = Decimal("0.00000001")  # NUMERIC(10,8) of model_provider_pricing
MAX_PRICE = Decimal("99.99999999")
MAX_ROUNDING_ERROR = Decimal("0.0001")
CHAT_MODES = frozenset({"chat", "completion"})

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


def per_1k(per_token: Any) -> Decimal | None:
    """A catalog per-token price as USD per 1,000 tokens; None if absent or not a number."""
    if isinstance(per_token, bool) or not isinstance(per_token, int | float | Decimal):
        return None
    return Decimal(str(per_token)) * PER_1K


def to_column(price: Decimal) -> Decimal | None:
    """`price` rounded to NUMERIC(10,8), or None if rounding would change it materially."""
    rounded = price.quantize(PRICE_EXPONENT, rounding=ROUND_HALF_EVEN)
    if price == 0 or abs(rounded - price) < abs(price) * MAX_ROUNDING_ERROR:
        return rounded
    return None


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
    exact = [
        per_1k(spec.get(name))
        for name in (
            "input_cost_per_token", "output_cost_per_token",
            "cache_creation_input_token_cost", "cache_read_input_token_cost",
        )
    ]  # fmt: skip
    if exact[0] is None or exact[1] is None:
        return "missing_price"
    if any(p is not None and (not p.is_finite() or p < 0) for p in exact):
        return "negative_price"
    if any(p is not None and p > MAX_PRICE for p in exact):
        return "price_too_large"
    columns = [None if p is None else to_column(p) for p in exact]
    if any(c is None and p is not None for c, p in zip(columns, exact, strict=True)):
        return "price_too_precise"
    input_price, output_price, cache_input, cache_hit = columns
    assert input_price is not None and output_price is not None
    price = PriceRow(input_price, output_price, cache_input, cache_hit)
    model = model_name_for(key, provider)
    if len(model) > 255 or len(key) > 255:
        return "name_too_long"
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
