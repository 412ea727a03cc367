"""Why LiteLLM's cost of a request differs from ours: each known cause, as a change to the
request or the prices that reproduces LiteLLM's number (docs/litellm-pricing-rules.md).

`explain(model, request, answer, spec)` -> (causes, cost): the causes that apply to the
request and our cost once LiteLLM's behaviour for each is imitated; a disagreement is
explained only when that cost then equals LiteLLM's.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from pipeline.core.events import ServiceTier
from pipeline.core.tariff import Component, Line, Tariff
from pipeline.money.catalog import components_of
from tests.oracle.catalog_requests import Model, usage_of

IGNORE_SERVICE_TIER = frozenset(
    {"xai", "perplexity", "dashscope", "qwencloud", "qwen_ai_platform", "deepseek", "tencent",
     "fireworks_ai", "lemonade"}
)  # fmt: skip
"""Providers whose LiteLLM calculator drops service_tier (cost_calculator.py:875-900)."""

CAUSES = {
    "litellm_cannot_price": "LiteLLM's batch path raises instead of pricing (get_llm_provider fails for github_copilot)",
    "service_tier_ignored": "LiteLLM's calculator for the provider drops the service tier the map prices",
    "resolved_to_other_key": "LiteLLM prices key K from the entry '<provider>/K' when one exists",
    "batch_cache_hits_free": "LiteLLM's half-price batch bills cache hits at 0 when the model has no cache-read price",
    "batch_without_web_search": "LiteLLM's batch path bills no web search",
    "request_fee_dropped": "LiteLLM's get_model_info drops input_cost_per_request (Perplexity's per-request fee)",
    "batch_half_price_flat": "LiteLLM's half-price batch bills 1h cache writes as 5m writes, audio and image input as text, reasoning and audio output as text",
    "tier_1h_write_keeps_base": "LiteLLM prices a flex or priority 1h cache write past a threshold at the un-thresholded 1h price unless the tier has its own thresholded one",
    "batch_prices_nothing": "LiteLLM's batch path finds no per-token price for the model (no entry under the name get_llm_provider gives it, or only a tiered_pricing table) and bills 0",
}
SEARCH_FEES = frozenset({Component.WEB_SEARCH, Component.WEB_SEARCH_PROMPT})


def _tariff_of(spec: Mapping[str, Any]) -> Tariff:
    rates = components_of(spec)
    assert not isinstance(rates, str), rates
    return Tariff(rates)


def explain(
    model: Model, request: dict[str, Any], answer: Mapping[str, Any], catalog: Mapping[str, Any]
) -> tuple[list[str], Decimal | None]:
    usage = usage_of(request)
    tariff = model.tariff
    causes = []
    if answer.get("cost") is None:
        unroutable = usage.service_tier is ServiceTier.BATCH and "GetLLMProvider" in str(
            answer["error"]
        )
        return (["litellm_cannot_price"] if unroutable else []), None
    route = str(answer.get("route_provider") or "")
    if (usage.service_tier in (ServiceTier.FLEX, ServiceTier.PRIORITY) and route in IGNORE_SERVICE_TIER
            and any(r.tier is usage.service_tier for r in model.entry.price.components)):  # fmt: skip
        causes.append("service_tier_ignored")
        usage = usage._replace(service_tier=ServiceTier.STANDARD)
    resolved = answer.get("resolved_key")
    if resolved and resolved != model.key and resolved in catalog:
        other = _tariff_of(catalog[resolved])
        if other.lines(usage) != tariff.lines(usage):
            causes.append("resolved_to_other_key")
            tariff = other
    if usage.service_tier is ServiceTier.BATCH and float(answer["cost"]) == 0.0:
        return ["batch_prices_nothing"], Decimal(0)
    spec = catalog[resolved or model.key]
    half_price = (
        usage.service_tier is ServiceTier.BATCH and "input_cost_per_token_batches" not in spec
    )
    if half_price and (
        usage.cache_write_1h_tokens or usage.audio_input_tokens or usage.image_input_tokens
        or usage.reasoning_tokens or usage.audio_output_tokens
    ):  # fmt: skip
        causes.append("batch_half_price_flat")
        usage = usage._replace(
            cache_write_1h_tokens=0, audio_input_tokens=0, image_input_tokens=0,
            reasoning_tokens=0, audio_output_tokens=0,
        )  # fmt: skip
    lines = tariff.lines(usage)
    if usage.cache_write_1h_tokens and usage.service_tier in (
        ServiceTier.FLEX,
        ServiceTier.PRIORITY,
    ):
        passed = tariff.passed(usage.service_tier, usage.input_tokens)
        base = tariff.rate(Component.CACHE_WRITE_1H, usage.service_tier, ())
        own = [line for line in lines if line.part is Component.CACHE_WRITE_1H]
        if (passed and base.component is Component.CACHE_WRITE_1H
                and own[0].rate.tier is not usage.service_tier and own[0].rate != base):  # fmt: skip
            causes.append("tier_1h_write_keeps_base")
            lines = [Line(line.part, line.units, base) if line.part is Component.CACHE_WRITE_1H
                     else line for line in lines]  # fmt: skip
    if any(line.part is Component.REQUEST for line in lines):
        causes.append("request_fee_dropped")
        lines = [line for line in lines if line.part is not Component.REQUEST]
    if usage.service_tier is ServiceTier.BATCH:
        if (
            usage.cached_input_tokens
            and "input_cost_per_token_batches" not in spec
            and ("cache_read_input_token_cost" not in spec)
        ):
            causes.append("batch_cache_hits_free")
            lines = [line for line in lines if line.part is not Component.CACHE_READ]
        if any(line.part in SEARCH_FEES and line.usd for line in lines):
            causes.append("batch_without_web_search")
            lines = [line for line in lines if line.part not in SEARCH_FEES]
    return causes, sum((line.usd for line in lines), Decimal(0))
