"""Price change detection and LiteLLM catalog parsing (pure)."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.events import ServiceTier as T
from pipeline.core.tariff import Component as C
from pipeline.core.tariff import Rate, Tariff, Usage
from pipeline.money.catalog import (
    PriceRow,
    ProviderRef,
    model_name_for,
    parse_litellm,
    provider_for,
)
from pipeline.money.prices import (
    MAX_PERCENT,
    change_between,
    percent_change,
    price_problem,
)

D = Decimal
prices_1k = st.decimals(min_value=D("0.00000001"), max_value=D("99.99999999"), places=8)


def spec(**overrides: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "litellm_provider": "openai",
        "mode": "chat",
        "input_cost_per_token": 2.5e-06,
        "output_cost_per_token": 1e-05,
    }
    entry.update(overrides)
    return {k: v for k, v in entry.items() if v is not None}


def test_new_model_has_no_previous_price() -> None:
    change = change_between(None, PriceRow(D("0.01"), D("0.03")))
    assert change.applied
    assert change.previous is None
    assert change.change_percent_input is None
    assert change.change_percent_output is None


def test_price_change_percent_is_rounded_to_cents() -> None:
    change = change_between(PriceRow(D("0.003"), D("0.015")), PriceRow(D("0.004"), D("0.01")))
    assert change.applied
    assert change.change_percent_input == D("33.33")
    assert change.change_percent_output == D("-33.33")


def test_same_price_is_no_change_whatever_the_scale() -> None:
    old = PriceRow(D("0.01000000"), D("0.03000000"), None, D("0.00500000"))
    change = change_between(old, PriceRow(D("0.01"), D("0.03"), None, D("0.005")))
    assert not change.applied
    assert change.unchanged


def test_a_cache_price_alone_is_a_change() -> None:
    old = PriceRow(D("0.01"), D("0.03"))
    assert change_between(old, PriceRow(D("0.01"), D("0.03"), None, D("0.001"))).applied


def test_percent_that_does_not_fit_numeric_5_2_is_none() -> None:
    assert percent_change(D("0.001"), D("0.02")) is None  # +1900 %
    assert percent_change(D("0"), D("0.02")) is None
    assert percent_change(D("0.001"), D("0.010")) == D("900.00")


@given(prices_1k, prices_1k)
def test_percent_change_fits_its_column_and_has_the_right_sign(old: Decimal, new: Decimal) -> None:
    percent = percent_change(old, new)
    if percent is None:
        assert abs((new - old) * 100 / old) > MAX_PERCENT - D("0.005")
        return
    assert abs(percent) <= MAX_PERCENT
    assert percent == percent.quantize(D("0.01"))
    assert (percent > 0) <= (new > old)
    assert (percent < 0) <= (new < old)


@given(prices_1k, prices_1k)
def test_change_is_applied_exactly_when_prices_differ(a: Decimal, b: Decimal) -> None:
    assert change_between(PriceRow(a, b), PriceRow(b, a)).applied == (a != b)


def test_price_problems() -> None:
    assert price_problem(PriceRow(D("0.01"), D("99.99999999"))) is None
    assert price_problem(PriceRow(D("0.01"), D("100"))) == "price_too_large"
    assert price_problem(PriceRow(D("-0.01"), D("1"))) == "negative_price"
    assert price_problem(PriceRow(D("0.000000001"), D("1"))) == "price_too_precise"


def test_per_token_prices_become_per_1k_decimals() -> None:
    catalog = parse_litellm(
        {
            "gpt-4o": spec(
                cache_read_input_token_cost=1.25e-06, cache_creation_input_token_cost=3.75e-06
            )
        }
    )
    (entry,) = catalog.entries
    assert entry.provider == ProviderRef("openai", "OpenAI")
    assert entry.model_name == "gpt-4o"
    assert entry.vendor_model_id == "gpt-4o"
    assert entry.price.values() == (D("0.0025"), D("0.01"), D("0.00375"), D("0.00125"))
    assert all(isinstance(v, Decimal) for v in entry.price.values() if v is not None)
    assert entry.price.components == ()  # the four columns hold these prices exactly


def test_float_noise_is_rounded_to_the_column_and_kept_in_the_component() -> None:
    catalog = parse_litellm({"x": spec(input_cost_per_token=D("0.0000016000000000000001"))})
    price = catalog.entries[0].price
    assert price.input_per_1k == D("0.00160000")
    assert D("0.0000016000000000000001") in {r.usd for r in price.components}


def test_provider_mapping() -> None:
    assert provider_for("anthropic") == ProviderRef("anthropic", "Anthropic")
    assert provider_for("gemini") == ProviderRef("google", "Google")
    assert provider_for("vertex_ai-anthropic_models") == ProviderRef("google", "Google")
    assert provider_for("azure") == ProviderRef("azure", "Azure OpenAI")
    assert provider_for("mistral") == ProviderRef("mistral", "mistral")
    assert provider_for("azure_ai") == ProviderRef("azure_ai", "azure_ai")


def test_model_names_lose_their_provider_prefix_only() -> None:
    assert model_name_for("azure/gpt-4o", "azure") == "gpt-4o"
    assert model_name_for("vertex_ai/claude-3-5-haiku", "vertex_ai-anthropic_models") == (
        "claude-3-5-haiku"
    )
    assert model_name_for("novita/deepseek/deepseek-v3", "novita") == "deepseek/deepseek-v3"
    assert model_name_for("ft:gpt-3.5-turbo", "openai") == "ft:gpt-3.5-turbo"
    assert model_name_for("meta-llama/Llama-3", "together_ai") == "meta-llama/Llama-3"


def test_skipped_entries_are_counted_by_reason() -> None:
    catalog = parse_litellm(
        {
            "sample_spec": {"mode": "one of: chat, embedding", "litellm_provider": "x"},
            "text-embedding-3-small": spec(mode="embedding"),
            "no-mode": spec(mode=None),
            "no-output": spec(output_cost_per_token=None),
            "free-text": spec(input_cost_per_token="0.1"),
            "no-provider": spec(litellm_provider=None),
            "huge": spec(output_cost_per_token=0.5),
            "tiny": spec(input_cost_per_token=3.625e-12),
            "negative": spec(input_cost_per_token=-1e-06),
            "not-a-dict": "hello",
            "gemini/gemini-2.5-pro": spec(litellm_provider="gemini"),
            "gemini-2.5-pro": spec(litellm_provider="vertex_ai-language-models"),
            "davinci-002": spec(mode="completion"),
        }
    )
    assert [e.vendor_model_id for e in catalog.entries] == [
        "tiny",
        "gemini/gemini-2.5-pro",
        "davinci-002",
    ]
    assert catalog.skipped == {
        "duplicate_model": 1,
        "missing_price": 2,
        "negative_price": 1,
        "no_provider": 1,
        "not_an_entry": 1,
        "not_chat_model": 3,
        "price_too_large": 1,
    }


def components(key: str, **overrides: object) -> set[Rate]:
    (entry,) = parse_litellm({key: spec(**overrides)}).entries
    return set(entry.price.components)


def test_a_tiered_pricing_table_becomes_thresholds_at_each_range_start() -> None:
    table = [
        {"range": [0, 256000.0], "input_cost_per_token": 5e-08, "output_cost_per_token": 4e-07,
         "output_cost_per_reasoning_token": 1e-06},
        {"range": [256000.0, 1000000.0], "input_cost_per_token": 2.5e-07,
         "output_cost_per_token": 2e-06, "output_cost_per_reasoning_token": 5e-06},
    ]  # fmt: skip
    # no top-level prices: the first range's are the base ones
    (entry,) = parse_litellm({"dashscope/qwen": spec(
        litellm_provider="dashscope", input_cost_per_token=None, output_cost_per_token=None,
        tiered_pricing=table)}).entries  # fmt: skip
    assert entry.price.values() == (D("0.00005"), D("0.0004"), None, None)
    assert set(entry.price.components) == {
        Rate(C.REASONING, T.STANDARD, 0, D("0.000001")),
        Rate(C.INPUT, T.STANDARD, 256_000, D("2.5E-7")),
        Rate(C.OUTPUT, T.STANDARD, 256_000, D("0.000002")),
        Rate(C.REASONING, T.STANDARD, 256_000, D("0.000005")),
    }
    tariff = Tariff.of(*entry.price.values(), entry.price.components)
    long = Usage(256_001, 100, reasoning_tokens=40)
    assert sum(line.usd for line in tariff.lines(long)) == (
        256_001 * D("2.5E-7") + 60 * D("0.000002") + 40 * D("0.000005"))  # fmt: skip
    at_the_end_of_the_first_range = Usage(256_000, 100)
    assert sum(line.usd for line in tariff.lines(at_the_end_of_the_first_range)) == (
        256_000 * D("5E-8") + 100 * D("4E-7"))  # fmt: skip


def test_vendor_prices_litellm_bills_from_its_code() -> None:
    def cache_hit_per_1k(**overrides: object) -> Decimal | None:
        (entry,) = parse_litellm({"fireworks_ai/m": spec(litellm_provider="fireworks_ai",
                                                         **overrides)}).entries  # fmt: skip
        return entry.price.cache_hit_per_1k

    assert cache_hit_per_1k() == D("0.00125")  # half the input price
    assert cache_hit_per_1k(cache_read_input_token_cost=1e-06) == D("0.001")
    assert components("xai/grok", litellm_provider="xai") == {
        Rate(C.WEB_SEARCH, T.STANDARD, 0, D("0.005"))}  # fmt: skip


def test_web_search_by_provider_and_billing_unit() -> None:
    sizes = {"search_context_size_low": 0.005, "search_context_size_medium": 0.01}
    assert components("gpt-x", search_context_cost_per_query=sizes) == {
        Rate(C.WEB_SEARCH, T.STANDARD, 0, D("0.01"))}  # fmt: skip
    assert components("perplexity/sonar", litellm_provider="perplexity",
                      search_context_cost_per_query=sizes) == {
        Rate(C.WEB_SEARCH, T.STANDARD, 0, D("0.005"))}  # fmt: skip
    # Google grounding: per grounded prompt unless per_query; $35/1k without a price
    assert components("gemini/g2", litellm_provider="gemini") == {
        Rate(C.WEB_SEARCH_PROMPT, T.STANDARD, 0, D("0.035"))}  # fmt: skip
    assert components("gemini/g3", litellm_provider="gemini", web_search_billing_unit="per_query",
                      search_context_cost_per_query=sizes) == {
        Rate(C.WEB_SEARCH, T.STANDARD, 0, D("0.01"))}  # fmt: skip
    assert components("vertex_ai/claude", litellm_provider="vertex_ai-anthropic_models") == set()


@given(st.floats(min_value=1e-9, max_value=0.09, allow_nan=False))
def test_any_catalog_price_in_range_is_kept_exactly(per_token: float) -> None:
    (entry,) = parse_litellm({"m": spec(input_cost_per_token=per_token)}).entries
    exact = Decimal(str(per_token))
    assert entry.price.input_per_1k == (exact * 1000).quantize(D("0.00000001"))
    assert Tariff.of(*entry.price.values(), entry.price.components).base[0] == exact
