"""Reference data the books price with: providers, vendor prices, margins.

They change rarely and every batch needs them, so the worker keeps them across batches
and revalidates them in each batch transaction by one row, `reference_version`, which
every change to those tables bumps (migration 012). The version is read *before* the rows,
so a change that lands in between only makes the next batch reload: a cached copy is
never older than its version says, and a change committed before a batch's first
statement prices that batch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg

from pipeline.core.pricing import MarginConfig, MarginResolver, Price
from pipeline.core.tariff import rates_of

Cursor = psycopg.AsyncCursor[tuple[Any, ...]]


@dataclass(frozen=True)
class Reference:
    version: int
    providers: dict[str, UUID]
    """Lower-cased provider name and api_type -> provider id (enabled providers)."""
    prices: dict[tuple[UUID, str], list[Price]]
    """Active price rows by (provider id, model name)."""
    margins: MarginResolver
    """Approved, active margin configs (it memoizes scope matches across batches)."""


class ReferenceCache:
    """The reference rows last read, revalidated by `reference_version` in every batch."""

    def __init__(self) -> None:
        self.current: Reference | None = None
        self.loads = 0

    async def read(self, cur: Cursor) -> tuple[datetime, Reference]:
        """The transaction's `now()` and the reference data as of this statement."""
        await cur.execute("SELECT now(), version FROM reference_version")
        row = await cur.fetchone()
        assert row is not None, "reference_version has its one row (migration 012)"
        now, version = row
        if self.current is None or self.current.version != version:
            self.current = await load(cur, version)
            self.loads += 1
        return now, self.current


# The reference rows' SQL, shared with the chaos drill's snapshot (`ops.chaos.edges`).
PROVIDERS_SQL = "SELECT id, name, api_type FROM providers WHERE is_enabled"
COMPONENTS_OF_P = """
    (SELECT array_agg(ARRAY[c.component, c.service_tier, c.above_tokens::text,
                            c.usd_per_unit::text])
     FROM model_price_components c WHERE c.pricing_id = p.id)
"""
"""The components of price row `p`, as text arrays for `tariff.rates_of` (exact)."""
PRICES_SQL = f"""
    SELECT p.provider_id, p.model_name, p.input_price_per_1k, p.output_price_per_1k,
           p.cache_input_price_per_1k, p.cache_hit_price_per_1k, p.effective_from,
           p.effective_until, {COMPONENTS_OF_P}
    FROM model_provider_pricing p WHERE p.is_active
"""
MARGINS_SQL = """
    SELECT id, scope_type, subscription_tier::text, provider_id, model_id,
           margin_multiplier, effective_from, effective_until
    FROM pricing_configs
    WHERE approval_status = 'approved' AND is_active
"""


def providers_by_name(rows: Iterable[tuple[Any, ...]]) -> dict[str, UUID]:
    """PROVIDERS_SQL rows -> lower-cased name and api_type -> provider id."""
    providers: dict[str, UUID] = {}
    for pid, name, api_type in rows:
        providers.setdefault(name.lower(), pid)
        providers.setdefault(api_type.lower(), pid)
    return providers


def prices_by_model(rows: Iterable[tuple[Any, ...]]) -> dict[tuple[UUID, str], list[Price]]:
    """PRICES_SQL rows -> their prices by (provider id, model name)."""
    prices: dict[tuple[UUID, str], list[Price]] = defaultdict(list)
    for r in rows:
        prices[(r[0], r[1])].append(
            Price(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], rates_of(r[8] or ()))
        )
    return dict(prices)


async def load(cur: Cursor, version: int) -> Reference:
    await cur.execute(PROVIDERS_SQL)
    providers = providers_by_name(await cur.fetchall())
    await cur.execute(PRICES_SQL)
    prices = prices_by_model(await cur.fetchall())
    await cur.execute(MARGINS_SQL)
    margins = MarginResolver([MarginConfig(*r) for r in await cur.fetchall()])
    return Reference(version, providers, prices, margins)
