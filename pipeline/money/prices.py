"""Vendor prices: change detection, LiteLLM catalog import and the effective-dated writes.

A price change is a new `model_provider_pricing` row; the row it replaces gets
`effective_until` = the new row's `effective_from`, so every request still finds the
price in effect when it started. Setting the price a model already has changes nothing,
which makes re-importing a catalog a no-op.

The pure part (`change_between`, `parse_litellm`, ...) decides; `set_price` and
`import_litellm` read and write PostgreSQL.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg

from pipeline.errors import PipelineError

PER_1K = Decimal(1000)
PRICE_EXPONENT = Decimal("0.00000001")  # NUMERIC(10,8) of model_provider_pricing
MAX_PRICE = Decimal("99.99999999")
PERCENT_EXPONENT = Decimal("0.01")
MAX_PERCENT = Decimal("999.99")  # NUMERIC(5,2) of price_change_percent_*
# The catalog stores binary floats (0.0000016000000000000001 per token): rounding a
# per-1k price to the column's 8 decimals is accepted if it moves the price by less than this.
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


class PriceError(PipelineError):
    """A price that cannot be recorded: unknown provider, bad value, out of order."""


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
class PriceChange:
    """What setting `new` over `previous` (None: a new model) means for the price row."""

    new: PriceRow
    previous: PriceRow | None
    change_percent_input: Decimal | None
    change_percent_output: Decimal | None
    applied: bool = True
    """False when the price was already in effect (nothing written)."""

    @property
    def unchanged(self) -> bool:
        return self.previous == self.new


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


@dataclass(frozen=True, slots=True)
class ImportedPrice:
    provider: str
    model_name: str
    change: PriceChange


@dataclass(frozen=True, slots=True)
class ImportReport:
    changes: tuple[ImportedPrice, ...]
    """Rows written: new models (previous None) and price changes."""
    unchanged: int
    skipped: Mapping[str, int] = field(default_factory=dict)
    providers_created: tuple[str, ...] = ()


def percent_change(old: Decimal | None, new: Decimal) -> Decimal | None:
    """(new - old) / old in percent, 2 dp; None without a non-zero old price or if it
    does not fit NUMERIC(5,2) (a more than tenfold rise)."""
    if old is None or old == 0:
        return None
    percent = ((new - old) * 100 / old).quantize(PERCENT_EXPONENT, rounding=ROUND_HALF_EVEN)
    return percent if abs(percent) <= MAX_PERCENT else None


def change_between(previous: PriceRow | None, new: PriceRow) -> PriceChange:
    """The change-detection columns of a new price row over the one it replaces."""
    old_input = previous.input_per_1k if previous else None
    old_output = previous.output_per_1k if previous else None
    return PriceChange(
        new=new,
        previous=previous,
        change_percent_input=percent_change(old_input, new.input_per_1k),
        change_percent_output=percent_change(old_output, new.output_per_1k),
        applied=previous != new,
    )


def price_problem(price: PriceRow) -> str | None:
    """Why `price` cannot be stored as NUMERIC(10,8), or None if it can."""
    for value in price.values():
        if value is None:
            continue
        if not value.is_finite() or value < 0:
            return "negative_price"
        if value > MAX_PRICE:
            return "price_too_large"
        if value != value.quantize(PRICE_EXPONENT):
            return "price_too_precise"
    return None


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


# The shell: PostgreSQL.

Cursor = psycopg.Cursor[Any]


def find_provider(cur: Cursor, name: str) -> UUID:
    """A provider by name or api_type, case-insensitively; a name match wins."""
    cur.execute(
        """
        SELECT id FROM providers WHERE lower(name) = lower(%(n)s) OR lower(api_type) = lower(%(n)s)
        ORDER BY lower(name) = lower(%(n)s) DESC, created_at, id LIMIT 1
        """,
        {"n": name},
    )
    row = cur.fetchone()
    if row is None:
        raise PriceError(f"unknown provider {name!r}")
    return UUID(str(row[0]))


def _ensure_provider(cur: Cursor, ref: ProviderRef) -> tuple[UUID, bool]:
    """(provider id, created?) for a catalog provider."""
    cur.execute(
        """
        SELECT id FROM providers WHERE api_type = %s
        ORDER BY name = %s DESC, created_at, id LIMIT 1
        """,
        (ref.api_type, ref.name),
    )
    row = cur.fetchone()
    if row is not None:
        return UUID(str(row[0])), False
    cur.execute(
        """
        INSERT INTO providers (name, api_type) VALUES (%s, %s)
        ON CONFLICT (name) DO UPDATE SET updated_at = providers.updated_at
        RETURNING id, xmax = 0
        """,
        (ref.name, ref.api_type),
    )
    row = cur.fetchone()
    assert row is not None
    return UUID(str(row[0])), bool(row[1])


def _write_price(
    cur: Cursor,
    provider_id: UUID,
    model: str,
    price: PriceRow,
    effective_from: datetime,
    vendor_model_id: str | None = None,
) -> PriceChange:
    problem = price_problem(price)
    if problem is not None:
        raise PriceError(f"{model}: {problem.replace('_', ' ')} (NUMERIC(10,8) per 1k tokens)")
    # Serializes price changes of one model, also while it has no row to lock yet.
    cur.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"price:{provider_id}:{model}",)
    )
    cur.execute(
        """
        SELECT id, input_price_per_1k, output_price_per_1k, cache_input_price_per_1k,
               cache_hit_price_per_1k, effective_from
        FROM model_provider_pricing
        WHERE provider_id = %s AND model_name = %s AND is_active
        ORDER BY effective_from DESC LIMIT 1
        """,
        (provider_id, model),
    )
    latest = cur.fetchone()
    previous = PriceRow(*latest[1:5]) if latest is not None else None
    change = change_between(previous, price)
    if not change.applied:
        return change
    if latest is not None:
        if latest[5] >= effective_from:
            raise PriceError(
                f"{model}: a price from {latest[5].isoformat()} exists; a change must start later"
            )
        cur.execute(
            "UPDATE model_provider_pricing SET effective_until = %s, updated_at = now() "
            "WHERE id = %s",
            (effective_from, latest[0]),
        )
    cur.execute(
        """
        INSERT INTO model_provider_pricing (
            provider_id, model_name, vendor_model_id, input_price_per_1k, output_price_per_1k,
            cache_input_price_per_1k, cache_hit_price_per_1k, effective_from,
            previous_price_input, previous_price_output, price_change_percent_input,
            price_change_percent_output, detected_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, CASE WHEN %s THEN now() END)
        """,
        (
            provider_id, model, vendor_model_id, *price.values(), effective_from,
            previous.input_per_1k if previous else None,
            previous.output_per_1k if previous else None,
            change.change_percent_input, change.change_percent_output, previous is not None,
        ),
    )  # fmt: skip
    return change


def set_price(
    conn: psycopg.Connection[Any],
    provider: str,
    model: str,
    input_per_1k: Decimal,
    output_per_1k: Decimal,
    cache_input_per_1k: Decimal | None,
    cache_hit_per_1k: Decimal | None,
    effective_from: datetime,
) -> PriceChange:
    """Make a price effective from `effective_from`, closing the row it replaces."""
    price = PriceRow(input_per_1k, output_per_1k, cache_input_per_1k, cache_hit_per_1k)
    with conn.transaction(), conn.cursor() as cur:
        return _write_price(cur, find_provider(cur, provider), model, price, effective_from)


def import_litellm(
    conn: psycopg.Connection[Any], path: Path, effective_from: datetime
) -> ImportReport:
    """Apply a LiteLLM price map in one transaction; prices already in effect are kept.

    A model whose latest price starts at or after `effective_from` and differs is skipped
    as `not_after_current` rather than rewriting history.
    """
    catalog = load_litellm(path)
    skipped = Counter(catalog.skipped)
    changes: list[ImportedPrice] = []
    created: list[str] = []
    unchanged = 0
    with conn.transaction(), conn.cursor() as cur:
        providers: dict[ProviderRef, UUID] = {}
        for entry in catalog.entries:
            if entry.provider not in providers:
                pid, is_new = _ensure_provider(cur, entry.provider)
                providers[entry.provider] = pid
                if is_new:
                    created.append(entry.provider.name)
            try:
                # Raised before anything is written, so the transaction stays usable.
                change = _write_price(
                    cur, providers[entry.provider], entry.model_name, entry.price,
                    effective_from, entry.vendor_model_id,
                )  # fmt: skip
            except PriceError:
                skipped["not_after_current"] += 1
                continue
            if change.applied:
                changes.append(ImportedPrice(entry.provider.name, entry.model_name, change))
            else:
                unchanged += 1
    return ImportReport(tuple(changes), unchanged, dict(sorted(skipped.items())), tuple(created))
