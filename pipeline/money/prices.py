"""Vendor prices: change detection and the effective-dated writes, one price or a catalog.

A price change is a new `model_provider_pricing` row; the row it replaces gets
`effective_until` = the new row's `effective_from`, so every request still finds the
price in effect when it started. Setting the price a model already has changes no price,
which makes re-importing a catalog a no-op for the books; it records that the price was
verified (`last_verified`).

The pure part (`change_between`, `price_problem`) decides; `set_price` and `import_litellm`
read and write PostgreSQL. The catalog itself is parsed in `pipeline.money.catalog`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg

from pipeline.books.reference import COMPONENTS_OF_P
from pipeline.core.events import ServiceTier
from pipeline.core.tariff import FEES, Component, Rate, rates_of
from pipeline.money.catalog import (
    MAX_COMPONENT,
    MAX_PRICE,
    PER_1K,
    PRICE_EXPONENT,
    PriceError,
    PriceRow,
    ProviderRef,
    beyond_columns,
    canonical,
    load_litellm,
)

PERCENT_EXPONENT = Decimal("0.01")
MAX_PERCENT = Decimal("999.99")  # NUMERIC(5,2) of price_change_percent_*


# The catalog stores binary floats (0.0000016000000000000001 per token): rounding a
# per-1k price to the column's 8 decimals is accepted if it moves the price by less than this.
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
    """Why `price` cannot be stored (the seed's columns are NUMERIC(10,8) per 1k tokens; a
    component is below 1000 USD per unit), or None if it can."""
    for value in price.values():
        if value is None:
            continue
        if not value.is_finite() or value < 0:
            return "negative_price"
        if value > MAX_PRICE:
            return "price_too_large"
        if value != value.quantize(PRICE_EXPONENT):
            return "price_too_precise"
    for rate in price.components:
        if not rate.usd.is_finite() or rate.usd < 0:
            return "negative_price"
        if rate.usd >= MAX_COMPONENT:
            return "price_too_large"
    return None


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
        raise PriceError(f"{model}: {problem.replace('_', ' ')}")
    # Serializes price changes of one model, also while it has no row to lock yet.
    cur.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"price:{provider_id}:{model}",)
    )
    cur.execute(
        f"""
        SELECT p.id, p.input_price_per_1k, p.output_price_per_1k, p.cache_input_price_per_1k,
               p.cache_hit_price_per_1k, p.effective_from, {COMPONENTS_OF_P}
        FROM model_provider_pricing p
        WHERE p.provider_id = %s AND p.model_name = %s AND p.is_active
        ORDER BY p.effective_from DESC LIMIT 1
        """,
        (provider_id, model),
    )
    latest = cur.fetchone()
    previous = (
        PriceRow(latest[1], latest[2], latest[3], latest[4], canonical(rates_of(latest[6] or ())))
        if latest is not None
        else None
    )
    change = change_between(previous, price)
    if not change.applied:
        assert latest is not None
        # Found unchanged: verified now (`pipeline.money.verification`).
        cur.execute(
            "UPDATE model_provider_pricing SET last_verified = now() WHERE id = %s", (latest[0],)
        )
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
        RETURNING id
        """,
        (
            provider_id, model, vendor_model_id, *price.values(), effective_from,
            previous.input_per_1k if previous else None,
            previous.output_per_1k if previous else None,
            change.change_percent_input, change.change_percent_output, previous is not None,
        ),
    )  # fmt: skip
    row = cur.fetchone()
    assert row is not None
    if price.components:
        cur.executemany(
            """
            INSERT INTO model_price_components
                (pricing_id, component, service_tier, above_tokens, usd_per_unit)
            VALUES (%s, %s, %s, %s, %s)
            """,
            [(row[0], r.component.value, r.tier.value, r.above_tokens, r.usd)
             for r in price.components],
        )  # fmt: skip
    return change


_COMPONENT_SPEC = re.compile(
    r"^(?P<component>[a-z_0-9]+)(?::(?P<tier>[a-z]+))?(?:>(?P<above>\d+))?=(?P<usd>[^=]+)$"
)
COMPONENT_SPEC_HELP = (
    "COMPONENT[:TIER][>TOKENS]=USD, e.g. input>200000=0.006 or output:priority=0.02: USD "
    "per 1k tokens (web_search: per query; web_search_prompt: per request that searched; "
    "request: per request)"
)


def parse_component(spec: str) -> Rate:
    """One `prices set --component` value as a rate (USD per token, query or request)."""
    match = _COMPONENT_SPEC.match(spec.strip())
    if match is None:
        raise PriceError(f"{spec!r} is not {COMPONENT_SPEC_HELP.split(',')[0]}")
    try:
        component = Component(match["component"])
        tier = ServiceTier(match["tier"] or ServiceTier.STANDARD)
        usd = Decimal(match["usd"])
    except (ValueError, ArithmeticError) as exc:
        raise PriceError(f"{spec!r}: {exc}") from exc
    if not usd.is_finite() or usd < 0:
        raise PriceError(f"{spec!r}: a price is a non-negative number")
    per_unit = usd if component in FEES else usd / PER_1K
    return Rate(component, tier, int(match["above"] or 0), per_unit)


def set_price(
    conn: psycopg.Connection[Any],
    provider: str,
    model: str,
    input_per_1k: Decimal,
    output_per_1k: Decimal,
    cache_input_per_1k: Decimal | None,
    cache_hit_per_1k: Decimal | None,
    effective_from: datetime,
    components: tuple[Rate, ...] = (),
) -> PriceChange:
    """Make a price effective from `effective_from`, closing the row it replaces."""
    columns = PriceRow(input_per_1k, output_per_1k, cache_input_per_1k, cache_hit_per_1k)
    price = replace(columns, components=beyond_columns(columns, components))
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
