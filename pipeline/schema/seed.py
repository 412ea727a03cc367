"""Reference data every environment starts with: providers, vendor prices, tier margins.

The rows are the seed plan's (Task 1.4), approved by a seeded admin user with a fixed,
well-known id. Every insert is keyed by its natural key and skips rows that exist, so
seeding twice changes nothing and never overwrites prices someone has since edited.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import psycopg

from pipeline.errors import PipelineError, first_line

ADMIN_USER_ID = UUID("5eed0000-0000-4000-8000-000000000001")
ADMIN_EMAIL = "admin@usage-pipeline.local"


@dataclass(frozen=True)
class ProviderSeed:
    name: str
    api_type: str


@dataclass(frozen=True)
class PriceSeed:
    """Vendor prices in USD per 1,000 tokens."""

    provider: str
    model_name: str
    vendor_model_id: str
    input_per_1k: Decimal
    output_per_1k: Decimal
    effective_from: datetime
    cache_input_per_1k: Decimal | None = None
    cache_hit_per_1k: Decimal | None = None


@dataclass(frozen=True)
class TierMarginSeed:
    tier: str
    margin_multiplier: Decimal
    target_gross_margin_percent: Decimal


@dataclass(frozen=True)
class SeedReport:
    """Rows inserted per table; all zero when the database was already seeded."""

    users: int
    providers: int
    model_prices: int
    pricing_configs: int

    @property
    def total(self) -> int:
        return self.users + self.providers + self.model_prices + self.pricing_configs


PROVIDERS = (
    ProviderSeed("OpenAI", "openai"),
    ProviderSeed("Anthropic", "anthropic"),
    ProviderSeed("Google", "google"),
    ProviderSeed("Azure OpenAI", "azure"),
)

PRICES = (
    PriceSeed(
        "OpenAI",
        "gpt-4-turbo",
        "gpt-4-turbo-2024-04-09",
        Decimal("0.01000"),
        Decimal("0.03000"),
        datetime(2024, 1, 1, tzinfo=UTC),
    ),
    PriceSeed(
        "OpenAI",
        "gpt-4o",
        "gpt-4o-2024-08-06",
        Decimal("0.00500"),
        Decimal("0.01500"),
        datetime(2024, 5, 1, tzinfo=UTC),
    ),
    PriceSeed(
        "Anthropic",
        "claude-3-5-sonnet",
        "claude-3-5-sonnet-20241022",
        Decimal("0.00300"),
        Decimal("0.01500"),
        datetime(2024, 10, 1, tzinfo=UTC),
        cache_input_per_1k=Decimal("0.00075"),
        cache_hit_per_1k=Decimal("0.00030"),
    ),
    PriceSeed(
        "Google",
        "gemini-2-0-flash",
        "gemini-2.0-flash-exp",
        Decimal("0.0000375"),
        Decimal("0.000150"),
        datetime(2024, 12, 1, tzinfo=UTC),
    ),
)

# The seed's free, pro and enterprise multipliers; its single `enterprise` tier became
# `enterprise_pro` and `enterprise_max`, both at the seed's enterprise multiplier. The seed
# has no rows for `pro_max` and `perpetual`; our choices, so that every tier is priced:
#   pro_max 1.4: between pro (1.5) and enterprise (1.2), a volume discount on pro.
#   perpetual 1.5: license holders without BYOK (hybrid mode) pay what pro pays.
# target_gross_margin_percent = (1 - 1 / multiplier) * 100, rounded to cents.
TIER_MARGINS = (
    TierMarginSeed("free", Decimal("2.00"), Decimal("50.00")),
    TierMarginSeed("pro", Decimal("1.50"), Decimal("33.33")),
    TierMarginSeed("pro_max", Decimal("1.40"), Decimal("28.57")),
    TierMarginSeed("enterprise_pro", Decimal("1.20"), Decimal("16.67")),
    TierMarginSeed("enterprise_max", Decimal("1.20"), Decimal("16.67")),
    TierMarginSeed("perpetual", Decimal("1.50"), Decimal("33.33")),
)
TIER_MARGINS_EFFECTIVE_FROM = datetime(2025, 1, 1, tzinfo=UTC)


class SeedError(PipelineError):
    """The database cannot take the seed data (not migrated, or conflicting rows)."""


def seed(conn: psycopg.Connection) -> SeedReport:
    """Insert the reference data that is missing, in one transaction."""
    try:
        with conn.transaction():
            return SeedReport(
                users=_seed_admin(conn),
                providers=sum(_seed_provider(conn, p) for p in PROVIDERS),
                model_prices=sum(_seed_price(conn, p) for p in PRICES),
                pricing_configs=sum(_seed_tier_margin(conn, m) for m in TIER_MARGINS),
            )
    except psycopg.errors.UndefinedTable as exc:
        raise SeedError(f"the schema is missing: {first_line(exc)}; migrate first") from exc
    except psycopg.errors.UniqueViolation as exc:
        raise SeedError(f"seed data conflicts with existing rows: {first_line(exc)}") from exc


def _seed_admin(conn: psycopg.Connection) -> int:
    return conn.execute(
        """
        INSERT INTO users (id, email, role) VALUES (%s, %s, 'admin')
        ON CONFLICT (id) DO NOTHING
        """,
        (ADMIN_USER_ID, ADMIN_EMAIL),
    ).rowcount


def _seed_provider(conn: psycopg.Connection, provider: ProviderSeed) -> int:
    return conn.execute(
        """
        INSERT INTO providers (name, api_type, is_enabled) VALUES (%s, %s, true)
        ON CONFLICT (name) DO NOTHING
        """,
        (provider.name, provider.api_type),
    ).rowcount


def _seed_price(conn: psycopg.Connection, price: PriceSeed) -> int:
    return conn.execute(
        """
        INSERT INTO model_provider_pricing (
            provider_id, model_name, vendor_model_id,
            input_price_per_1k, output_price_per_1k,
            cache_input_price_per_1k, cache_hit_price_per_1k,
            effective_from, is_active
        )
        SELECT id, %s, %s, %s, %s, %s, %s, %s, true FROM providers WHERE name = %s
        ON CONFLICT (provider_id, model_name, effective_from) DO NOTHING
        """,
        (
            price.model_name,
            price.vendor_model_id,
            price.input_per_1k,
            price.output_per_1k,
            price.cache_input_per_1k,
            price.cache_hit_per_1k,
            price.effective_from,
            price.provider,
        ),
    ).rowcount


def _seed_tier_margin(conn: psycopg.Connection, margin: TierMarginSeed) -> int:
    return conn.execute(
        """
        INSERT INTO pricing_configs (
            scope_type, subscription_tier, margin_multiplier, target_gross_margin_percent,
            effective_from, reason, created_by, approved_by, approval_status, is_active
        )
        VALUES ('tier', %s, %s, %s, %s, 'initial_setup', %s, %s, 'approved', true)
        ON CONFLICT (scope_type, subscription_tier, provider_id, model_id, effective_from)
            WHERE approval_status = 'approved' AND is_active
            DO NOTHING
        """,
        (
            margin.tier,
            margin.margin_multiplier,
            margin.target_gross_margin_percent,
            TIER_MARGINS_EFFECTIVE_FROM,
            ADMIN_USER_ID,
            ADMIN_USER_ID,
        ),
    ).rowcount
