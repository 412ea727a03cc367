from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import uuid4

from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.pricing import (
    MarginConfig,
    Price,
    charge,
    credits_for,
    price_in_effect,
    resolve_margin,
    vendor_cost,
)
from pipeline.core.tariff import Usage as TokenCounts

T0 = datetime(2025, 1, 1, tzinfo=UTC)
OPENAI = uuid4()
GPT4O = Price(OPENAI, "gpt-4o", Decimal("0.005"), Decimal("0.015"), None, None, T0, None)
SONNET = Price(
    OPENAI, "claude", Decimal("0.003"), Decimal("0.015"), Decimal("0.00075"), Decimal("0.0003"),
    T0, None,
)  # fmt: skip


def margin(scope: str, mult: str, *, tier=None, provider=None, model=None, start=T0, end=None):
    return MarginConfig(uuid4(), scope, tier, provider, model, Decimal(mult), start, end)


def test_seed_example_gpt4o_costs_53_credits_at_pro_margin():
    tokens = TokenCounts(1000, 2000, 0, 0)
    result = charge(tokens, GPT4O, Decimal("1.5"), Decimal("0.001"))
    assert result.vendor_cost == Decimal("0.035")
    assert result.credits == 53  # ceil(0.0525 / 0.001)
    assert result.credit_value_usd == Decimal("0.053")


def test_design_rounding_example_0_0225_usd_is_23_credits():
    assert credits_for(Decimal("0.015"), Decimal("1.5"), Decimal("0.001")) == 23


def test_cache_hits_and_writes_use_their_prices():
    tokens = TokenCounts(input_tokens=10_000, output_tokens=0, cached_input_tokens=6_000,
                         cache_write_tokens=3_000)  # fmt: skip
    # 1000 uncached x 0.003 + 6000 hits x 0.0003 + 3000 writes x 0.00075, per 1k
    assert vendor_cost(tokens, SONNET).usd == Decimal("0.00705")


def test_missing_cache_prices_fall_back_to_input_price():
    tokens = TokenCounts(2000, 0, 1000, 1000)
    assert vendor_cost(tokens, GPT4O).usd == vendor_cost(TokenCounts(2000, 0, 0, 0), GPT4O).usd


def test_zero_cost_is_zero_credits():
    assert credits_for(Decimal(0), Decimal("2"), Decimal("0.001")) == 0


tokens_st = st.integers(0, 2_000_000)


@given(tokens_st, tokens_st, st.decimals("0.01", "9.99", places=2))
def test_credits_cover_the_charge_and_never_by_a_whole_credit_more(inp, out, mult):
    usd = Decimal("0.001")
    cost = vendor_cost(TokenCounts(inp, out, 0, 0), GPT4O).usd
    credits = credits_for(cost, mult, usd)
    assert credits * usd >= cost * mult
    assert (credits - 1) * usd < cost * mult or credits == 0


@given(tokens_st, st.integers(0, 100), st.integers(0, 100))
def test_cached_tokens_never_cost_more_than_uncached(total, hit_pct, write_pct):
    hits = total * hit_pct // 100
    writes = (total - hits) * write_pct // 100
    cached = vendor_cost(TokenCounts(total, 0, hits, writes), SONNET).usd
    plain = vendor_cost(TokenCounts(total, 0, 0, 0), SONNET).usd
    assert cached <= plain
    assert cached.as_tuple().exponent >= -8


def test_price_in_effect_by_start_time():
    old = Price(OPENAI, "m", Decimal("1"), Decimal("1"), None, None, T0, T0 + timedelta(days=10))
    new = Price(OPENAI, "m", Decimal("2"), Decimal("2"), None, None, T0 + timedelta(days=10), None)
    assert price_in_effect([old, new], T0 + timedelta(days=9, hours=23)) is old
    assert price_in_effect([old, new], T0 + timedelta(days=10)) is new
    assert price_in_effect([old, new], T0 - timedelta(seconds=1)) is None


def test_margin_precedence_combination_over_model_over_provider_over_tier():
    tier = margin("tier", "1.5", tier="pro")
    prov = margin("provider", "1.4", provider=OPENAI)
    model = margin("model", "1.3", model="gpt-4o")
    combo = margin("combination", "1.2", tier="pro", provider=OPENAI, model="gpt-4o")
    at = T0 + timedelta(days=1)
    assert resolve_margin([tier, prov, model, combo], "pro", OPENAI, "gpt-4o", at) is combo
    assert resolve_margin([tier, prov, model], "pro", OPENAI, "gpt-4o", at) is model
    assert resolve_margin([tier, prov], "pro", OPENAI, "gpt-4o", at) is prov
    assert resolve_margin([tier], "pro", OPENAI, "gpt-4o", at) is tier
    assert resolve_margin([tier], "free", OPENAI, "gpt-4o", at) is None


def test_combination_for_another_tier_does_not_match():
    combo = margin("combination", "1.2", tier="enterprise_max", model="gpt-4o")
    tier = margin("tier", "1.5", tier="pro")
    assert resolve_margin([combo, tier], "pro", OPENAI, "gpt-4o", T0) is tier


def test_margin_outside_its_window_is_ignored_and_newest_wins_a_tie():
    old = margin("tier", "2.0", tier="free", end=T0 + timedelta(days=5))
    newer = margin("tier", "1.8", tier="free", start=T0 + timedelta(days=5))
    assert resolve_margin([old, newer], "free", OPENAI, "x", T0 + timedelta(days=1)) is old
    assert resolve_margin([old, newer], "free", OPENAI, "x", T0 + timedelta(days=6)) is newer
