"""LiteLLM's own price for chat/completion requests: the oracle our prices are checked against.

Runs INSIDE a virtual environment that has `litellm` (the pinned release, see
tests/oracle/venv.py), never in the project's own environment:

    LITELLM_LOCAL_MODEL_COST_MAP=True .state/litellm-oracle-1.110.2/bin/python \
        tests/oracle/litellm_oracle.py < requests.jsonl > costs.jsonl

Reads JSON lines on stdin, one request each:

    {"id": ..., "model": <catalog key>, "provider": <litellm_provider of the entry>,
     "input_tokens": N,          # every prompt token, cache hits and cache writes included
     "cached_input_tokens": N,   # cache hits (a subset of input_tokens)
     "cache_write_tokens": N,    # cache writes, every lifetime (a subset of input_tokens)
     "cache_write_1h_tokens": N, # the one-hour writes among cache_write_tokens
     "output_tokens": N,         # every completion token, reasoning and audio included
     "reasoning_tokens": N, "audio_output_tokens": N,   # subsets of output_tokens
     "audio_input_tokens": N, "image_input_tokens": N,  # uncached prompt tokens of those modalities
     "web_search_requests": N,
     "service_tier": "standard" | "batch" | "flex" | "priority",
     "at": "2026-01-07T02:00:00+00:00",  # optional: the billing moment (off-peak pricing)
     "route_provider": "...",            # optional: the provider the completion path hands LiteLLM
     "via": "cost_per_token" | "completion_cost"}  # optional, default cost_per_token

Missing counts are 0. Writes one JSON line per request, in input order:

    {"id": ..., "cost": repr(float) or null, "error": null or "Type: message",
     "prompt_cost": float, "completion_cost": float, "tool_cost": float,
     "resolved_key": the model-map key LiteLLM's get_model_info resolves (null if none),
     "route_provider": the provider LiteLLM was called with, "path": what was called,
     "litellm_version": the installed litellm release}

How LiteLLM is called (the way its own completion path prices a chat completion, see
docs/litellm-pricing-rules.md):
- standard/flex/priority: `litellm.cost_per_token(model=key, custom_llm_provider=route,
  usage_object=usage, service_tier=None|"flex"|"priority", call_type="completion")`
  plus what `completion_cost` adds after it: the built-in tool (web search) cost,
  `StandardBuiltInToolCostTracking.get_cost_for_built_in_tools`, and the Azure
  additional costs (Model Router fee). cost = prompt + completion + tools.
- batch: `litellm.cost_calculator.batch_cost_calculator(usage, model=key,
  custom_llm_provider=route)`, the function LiteLLM prices each line of a retrieved batch's
  output file with (litellm/batches/batch_utils.py `_output_line_cost`); that path adds no
  web-search cost. (`service_tier="batch"` on the chat path would be priced as standard.)
- every request is priced inside `pinned_billing_time(at)`, default DEFAULT_AT, a Wednesday
  02:00 UTC (10:00 in Shanghai): outside every off_peak_pricing window of the map
  (DeepSeek/Tencent DeepSeek models), so they price at their standard rates.
- `via: "completion_cost"` instead prices a `ModelResponse` carrying the usage through
  `litellm.completion_cost` (the whole completion path, candidate-name selection included),
  for cross-checks; batch requests ignore it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # the bundled map, never the network
os.environ.setdefault("LITELLM_LOG", "CRITICAL")

DEFAULT_AT = datetime(2026, 1, 7, 2, 0, tzinfo=UTC)
"""Wednesday 02:00 UTC: peak time for every off_peak_pricing block of the 1.110.2 map."""

TIERS = {"standard": None, "flex": "flex", "priority": "priority", "batch": "batch"}
COUNTS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "cache_write_1h_tokens",
          "output_tokens", "reasoning_tokens", "audio_output_tokens", "audio_input_tokens",
          "image_input_tokens", "web_search_requests")  # fmt: skip


def route_provider(provider: str) -> str:
    """The provider LiteLLM's completion path prices a catalog entry's requests under, from the
    entry's litellm_provider: the one `litellm.get_llm_provider(key)` routes the key to where
    the entry's litellm_provider is a catalog label rather than a routing provider."""
    if provider.startswith("vertex_ai"):
        return "vertex_ai"  # vertex_ai-language-models, vertex_ai-anthropic_models, ...
    if provider == "bedrock_converse":
        return "bedrock"
    return provider


def build_usage(request: dict[str, Any]) -> Any:
    """The `Usage` LiteLLM's provider transformations build for these counts (see the notes):
    prompt_tokens counts every prompt token (the Usage constructor adds nothing to it), the
    cache and modality counts go in prompt_tokens_details, reasoning and audio output in
    completion_tokens_details, web searches in every field a provider's calculator reads."""
    from litellm.types.utils import Usage

    n = {name: int(request.get(name) or 0) for name in COUNTS}
    prompt: dict[str, Any] = {}
    if n["cached_input_tokens"]:
        prompt["cached_tokens"] = n["cached_input_tokens"]
    if n["cache_write_tokens"]:
        prompt["cache_creation_tokens"] = n["cache_write_tokens"]
        if n["cache_write_1h_tokens"]:
            prompt["cache_creation_token_details"] = {
                "ephemeral_5m_input_tokens": n["cache_write_tokens"] - n["cache_write_1h_tokens"],
                "ephemeral_1h_input_tokens": n["cache_write_1h_tokens"],
            }
    if n["audio_input_tokens"]:
        prompt["audio_tokens"] = n["audio_input_tokens"]
    if n["image_input_tokens"]:
        prompt["image_tokens"] = n["image_input_tokens"]
    searches = n["web_search_requests"]
    if searches:
        # Gemini/Vertex and Perplexity read prompt_tokens_details.web_search_requests;
        # Anthropic, OpenAI-compatible and Groq read server_tool_use; xAI reads
        # server_side_tool_usage_details. A 0 must stay absent: present-but-0 bills one
        # search on the OpenAI-compatible path.
        prompt["web_search_requests"] = searches
    completion: dict[str, Any] = {}
    if n["reasoning_tokens"]:
        completion["reasoning_tokens"] = n["reasoning_tokens"]
    if n["audio_output_tokens"]:
        completion["audio_tokens"] = n["audio_output_tokens"]
    extra: dict[str, Any] = {}
    if searches:
        extra["server_tool_use"] = {"web_search_requests": searches}
        extra["server_side_tool_usage_details"] = {"web_search_calls": searches}
    return Usage(
        prompt_tokens=n["input_tokens"],
        completion_tokens=n["output_tokens"],
        # xAI's calculator adds reasoning_tokens again unless total == prompt + completion
        total_tokens=n["input_tokens"] + n["output_tokens"],
        prompt_tokens_details=prompt or None,
        completion_tokens_details=completion or None,
        **extra,
    )


def _resolved_key(model: str, provider: str) -> str | None:
    import litellm

    try:
        return str(litellm.get_model_info(model=model, custom_llm_provider=provider)["key"])
    except Exception:  # an unmapped model: LiteLLM raises a bare Exception
        return None


def _together_category(model: str, route: str) -> str:
    """completion_cost prices a Together AI model without its own together_ai/ entry at its
    size category's entry (together-ai-up-to-4b, ...); cost_calculator.py completion_cost."""
    import litellm
    from litellm.llms.together_ai.cost_calculator import (
        get_model_params_and_category,
        has_together_registry_pricing,
    )
    from litellm.types.utils import CallTypes

    if ("togethercomputer" in model or "together_ai" in model or route == "together_ai") and (
        not has_together_registry_pricing(model, litellm.model_cost)
    ):
        return str(get_model_params_and_category(model, call_type=CallTypes.completion))
    return model


def price(request: dict[str, Any]) -> dict[str, Any]:
    """One request's answer line (without the id)."""
    import litellm
    from litellm import cost_calculator
    from litellm._internal_context import pinned_billing_time
    from litellm.litellm_core_utils.llm_cost_calc.tool_call_cost_tracking import (
        StandardBuiltInToolCostTracking,
    )
    from litellm.types.utils import ModelResponse

    model = str(request["model"])
    route = str(request.get("route_provider") or route_provider(str(request["provider"])))
    tier_name = str(request.get("service_tier") or "standard")
    if tier_name not in TIERS:
        raise ValueError(f"unknown service_tier {tier_name!r}")
    at = datetime.fromisoformat(request["at"]) if request.get("at") else DEFAULT_AT
    usage = build_usage(request)
    prompt_cost = completion_cost = tool_cost = additional = 0.0
    with pinned_billing_time(at):
        if tier_name == "batch":
            path = "batch_cost_calculator"
            prompt_cost, completion_cost = cost_calculator.batch_cost_calculator(
                usage=usage, model=model, custom_llm_provider=route
            )
        elif request.get("via") == "completion_cost":
            path = "completion_cost"
            response = ModelResponse(model=model, usage=usage)
            response._hidden_params = {"custom_llm_provider": route}
            total = litellm.completion_cost(
                completion_response=response, model=model, custom_llm_provider=route,
                service_tier=TIERS[tier_name], call_type="completion",
            )  # fmt: skip
            return {"cost": repr(float(total)), "error": None, "prompt_cost": None,
                    "completion_cost": None, "tool_cost": None,
                    "resolved_key": _resolved_key(model, route), "route_provider": route,
                    "path": path}  # fmt: skip
        else:
            path = "cost_per_token"
            priced_model = _together_category(model, route)
            prompt_cost, completion_cost = litellm.cost_per_token(
                model=priced_model,
                custom_llm_provider=route,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                usage_object=usage,
                service_tier=TIERS[tier_name],
                call_type="completion",
            )
            tool_cost = StandardBuiltInToolCostTracking.get_cost_for_built_in_tools(
                model=model,
                response_object=ModelResponse(model=model, usage=usage),
                usage=usage,
                custom_llm_provider=route,
            )
            if route in ("azure_ai", "azure") and not cost_calculator.azure_ai_is_model_router_name(
                model
            ):
                extra = cost_calculator._get_additional_costs(
                    model=model, custom_llm_provider=route,
                    prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                )  # fmt: skip
                additional = sum((extra or {}).values())
    total = prompt_cost + completion_cost + tool_cost + additional  # completion_cost's order
    priced = _together_category(model, route) if path == "cost_per_token" else model
    return {"cost": repr(float(total)), "error": None, "prompt_cost": prompt_cost,
            "completion_cost": completion_cost, "tool_cost": tool_cost + additional,
            "resolved_key": _resolved_key(priced, route), "route_provider": route,
            "path": path}  # fmt: skip


def main() -> int:
    out = sys.stdout
    sys.stdout = sys.stderr  # whatever LiteLLM prints must not corrupt the answer lines
    with contextlib.redirect_stdout(sys.stderr):
        import litellm

        litellm.suppress_debug_info = True
        for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        from importlib.metadata import version

        release = version("litellm")
        for line in sys.stdin:
            if not line.strip():
                continue
            request: dict[str, Any] = {}
            try:
                request = json.loads(line)
                answer = {"id": request.get("id"), **price(request)}
            except Exception as e:  # one bad request must not stop the batch
                answer = {"id": request.get("id"), "cost": None,
                          "error": f"{type(e).__name__}: {e}"}  # fmt: skip
            out.write(json.dumps({**answer, "litellm_version": release}) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
