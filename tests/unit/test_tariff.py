"""The tariff's rules: which threshold applies, which tier price replaces which, and what
falls back to what (`pipeline.core.tariff`)."""

from decimal import Decimal as D

from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.events import ServiceTier as T
from pipeline.core.tariff import Component as C
from pipeline.core.tariff import Rate, Tariff, Usage

# A GPT-5-like model: long prompts past 272k cost double; flex half, priority double.
GPT5 = Tariff.of(D("0.00125"), D("0.01"), None, D("0.000125"), [
    Rate(C.INPUT, T.STANDARD, 0, D("0.00000125")),
    Rate(C.INPUT, T.STANDARD, 272_000, D("0.0000025")),
    Rate(C.OUTPUT, T.STANDARD, 272_000, D("0.000015")),
    Rate(C.CACHE_READ, T.STANDARD, 272_000, D("0.00000025")),
    Rate(C.INPUT, T.FLEX, 0, D("0.000000625")),
    Rate(C.OUTPUT, T.FLEX, 0, D("0.000005")),
    Rate(C.INPUT, T.PRIORITY, 0, D("0.0000025")),
    Rate(C.OUTPUT, T.PRIORITY, 0, D("0.00002")),
    Rate(C.INPUT, T.BATCH, 0, D("0.000000625")),
    Rate(C.OUTPUT, T.BATCH, 0, D("0.000005")),
])  # fmt: skip
# A Claude-like model: 200k threshold, cache writes 1.25x, one-hour writes 2x.
SONNET = Tariff.of(D("0.003"), D("0.015"), D("0.00375"), D("0.0003"), [
    Rate(C.CACHE_WRITE_1H, T.STANDARD, 0, D("0.000006")),
    Rate(C.INPUT, T.STANDARD, 200_000, D("0.000006")),
    Rate(C.CACHE_WRITE, T.STANDARD, 200_000, D("0.0000075")),
    Rate(C.WEB_SEARCH, T.STANDARD, 0, D("0.01")),
])  # fmt: skip


def cost(tariff: Tariff, usage: Usage) -> D:
    return sum((line.usd for line in tariff.lines(usage)), D(0))


def test_a_long_prompt_prices_every_token_at_the_threshold_rate() -> None:
    at = Usage(272_000, 1000)
    past = Usage(272_001, 1000)
    assert cost(GPT5, at) == 272_000 * D("0.00000125") + 1000 * D("0.00001")
    assert cost(GPT5, past) == 272_001 * D("0.0000025") + 1000 * D("0.000015")


def test_cached_and_written_tokens_count_towards_the_threshold() -> None:
    usage = Usage(300_000, 0, cached_input_tokens=290_000)
    assert cost(GPT5, usage) == 10_000 * D("0.0000025") + 290_000 * D("0.00000025")


def test_a_tier_price_replaces_the_standard_one_and_missing_ones_fall_back() -> None:
    usage = Usage(1000, 100, cached_input_tokens=500, service_tier=T.PRIORITY)
    # No priority cache price: the standard cache-read price, not the priority input price.
    assert cost(GPT5, usage) == 500 * D("0.0000025") + 500 * D("0.000000125") + 100 * D("0.00002")


def test_a_tier_past_a_threshold_uses_the_standard_threshold_price_it_lacks() -> None:
    usage = Usage(300_000, 0, service_tier=T.FLEX)
    assert cost(GPT5, usage) == 300_000 * D("0.0000025")


def test_batch_without_batch_prices_is_half_the_standard_price() -> None:
    usage = Usage(10_000, 1000, service_tier=T.BATCH)
    assert cost(SONNET, usage) == (10_000 * D("0.000003") + 1000 * D("0.000015")) / 2
    assert cost(GPT5, usage) == 10_000 * D("0.000000625") + 1000 * D("0.000005")


def test_one_hour_cache_writes_web_search_and_their_fallbacks() -> None:
    usage = Usage(10_000, 0, cache_write_tokens=4000, cache_write_1h_tokens=1000,
                  web_search_requests=3)  # fmt: skip
    assert cost(SONNET, usage) == (
        6000 * D("0.000003") + 3000 * D("0.00000375") + 1000 * D("0.000006") + 3 * D("0.01")
    )
    # GPT5 has no cache-write price at all: writes of both lifetimes are input; no search fee.
    assert cost(GPT5, usage) == 10_000 * D("0.00000125")


def test_reasoning_falls_back_to_the_tier_output_price() -> None:
    with_reasoning_price = Tariff.of(D("0.001"), D("0.002"), None, None, [
        Rate(C.REASONING, T.STANDARD, 0, D("0.000003")),
        Rate(C.OUTPUT, T.PRIORITY, 0, D("0.000004")),
    ])  # fmt: skip
    usage = Usage(0, 100, reasoning_tokens=40)
    assert cost(with_reasoning_price, usage) == 60 * D("0.000002") + 40 * D("0.000003")
    priority = usage._replace(service_tier=T.PRIORITY)
    assert cost(with_reasoning_price, priority) == 100 * D("0.000004")


def test_grounding_billed_per_prompt_costs_once_however_many_searches() -> None:
    gemini = Tariff.of(D("0.0003"), D("0.0025"), None, None,
                       [Rate(C.WEB_SEARCH_PROMPT, T.STANDARD, 0, D("0.035"))])  # fmt: skip
    assert cost(gemini, Usage(1000, 100, web_search_requests=3)) == (
        1000 * D("0.0000003") + 100 * D("0.0000025") + D("0.035"))  # fmt: skip
    assert cost(gemini, Usage(1000, 100)) == 1000 * D("0.0000003") + 100 * D("0.0000025")


def test_an_audio_input_threshold_counts_on_its_own() -> None:
    tariff = Tariff.of(D("0.0003"), D("0.0025"), None, None, [
        Rate(C.AUDIO_INPUT, T.STANDARD, 0, D("0.000001")),
        Rate(C.AUDIO_INPUT, T.STANDARD, 200_000, D("0.0000003")),
    ])  # fmt: skip
    usage = Usage(200_001, 0, audio_input_tokens=1)
    assert cost(tariff, usage) == 200_000 * D("0.0000003") + 1 * D("0.0000003")


def test_xai_style_inclusive_thresholds_are_stored_one_lower() -> None:
    tariff = Tariff.of(D("0.001"), D("0.001"), None, None,
                       [Rate(C.INPUT, T.STANDARD, 127_999, D("0.000002"))])  # fmt: skip
    assert tariff.passed(T.STANDARD, 128_000) == (127_999,)
    assert tariff.passed(T.STANDARD, 127_999) == ()


counts = st.integers(0, 400_000)


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    cached, write, audio, image = (draw(st.integers(0, 100_000)) for _ in range(4))
    inp = cached + write + audio + image + draw(counts)
    reasoning, audio_out = draw(st.integers(0, 5000)), draw(st.integers(0, 5000))
    out = reasoning + audio_out + draw(st.integers(0, 5000))
    return Usage(inp, out, cached, write, draw(st.integers(0, write)), reasoning, audio, image,
                 audio_out, draw(st.integers(0, 5)), draw(st.sampled_from(list(T))))  # fmt: skip


@given(usages())
def test_lines_cover_every_unit_once(usage: Usage) -> None:
    for tariff in (GPT5, SONNET):
        lines = tariff.lines(usage)
        tokens_in = sum(line.units for line in lines
                        if line.part not in (C.OUTPUT, C.REASONING, C.AUDIO_OUTPUT,
                                             C.WEB_SEARCH, C.REQUEST))  # fmt: skip
        tokens_out = sum(line.units for line in lines
                         if line.part in (C.OUTPUT, C.REASONING, C.AUDIO_OUTPUT))  # fmt: skip
        assert tokens_in == usage.input_tokens
        assert tokens_out == usage.output_tokens
        assert all(line.units > 0 for line in lines)


@given(usages(), st.integers(1, 100_000))
def test_a_longer_prompt_never_costs_less(usage: Usage, more: int) -> None:
    longer = usage._replace(input_tokens=usage.input_tokens + more)
    for tariff in (GPT5, SONNET):
        assert cost(tariff, longer) >= cost(tariff, usage)


@given(usages())
def test_standard_prices_bound_flex_and_batch_from_above_and_priority_from_below(
    usage: Usage,
) -> None:
    standard = cost(GPT5, usage._replace(service_tier=T.STANDARD))
    assert cost(GPT5, usage._replace(service_tier=T.FLEX)) <= standard
    assert cost(GPT5, usage._replace(service_tier=T.BATCH)) <= standard
    assert cost(GPT5, usage._replace(service_tier=T.PRIORITY)) >= standard
