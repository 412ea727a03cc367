"""LiteLLM's StandardLoggingPayload -> contract events, on payloads recorded from the real
proxy (litellm 1.108.7, `mock_response` models; tests/fixtures/litellm-1.108.7)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.events import Rejection, UsageEvent, decode, gateway_alias
from pipeline.core.pricing import Price, vendor_cost
from pipeline.errors import Reason
from pipeline.gateways.litellm import REQUEST_NAMESPACE, BilledUser, UserSource, to_event
from pipeline.money.catalog import load_litellm

ROOT = Path(__file__).resolve().parents[2]
RECORDED = ROOT / "tests" / "fixtures" / "litellm-1.108.7"
KEY_USER = BilledUser(UserSource.KEY_USER)


def payload(name: str) -> Any:
    return json.loads((RECORDED / f"{name}.json").read_text())


def event(mapped: dict[str, Any] | Rejection) -> UsageEvent:
    """The mapped event as the worker decodes it."""
    assert isinstance(mapped, dict), mapped
    decoded = decode(json.dumps(mapped).encode(), datetime.now(UTC), timedelta(minutes=5))
    assert isinstance(decoded, UsageEvent), decoded
    return decoded


def test_a_plain_call_maps_to_one_event_of_the_keys_user() -> None:
    recorded = payload("success")
    mapped = event(to_event(recorded, KEY_USER))
    assert mapped.request_id == uuid.uuid5(
        REQUEST_NAMESPACE, f"{recorded['litellm_call_id']}:success"
    )
    assert mapped.gateway_user is not None
    assert (mapped.gateway_user.gateway, mapped.gateway_user.id) == ("litellm", "default_user_id")
    assert mapped.user_id == gateway_alias("litellm", "default_user_id")
    assert (mapped.provider, mapped.model) == ("openai", "gpt-4o-mini")
    assert (mapped.input_tokens, mapped.output_tokens) == (10, 20)
    assert (mapped.cached_input_tokens, mapped.cache_write_tokens) == (0, 0)
    assert mapped.status.value == "success" and mapped.request_type == "completion"
    assert mapped.started_at == datetime.fromtimestamp(recorded["startTime"], UTC)
    assert mapped.completed_at == datetime.fromtimestamp(recorded["endTime"], UTC)


def test_the_same_call_logged_twice_maps_to_the_same_event() -> None:
    recorded = payload("success")
    assert to_event(recorded, KEY_USER) == to_event(json.loads(json.dumps(recorded)), KEY_USER)


def test_a_fallback_is_two_requests_the_failed_attempt_and_the_answer() -> None:
    recorded = payload("fallback_failure_then_success")  # from a proxy without keys: no key user
    assert recorded[0]["litellm_call_id"] == recorded[1]["litellm_call_id"]
    failed, answered = (event(to_event(p, BilledUser.parse("tag:User-Agent: "))) for p in recorded)
    assert failed.request_id != answered.request_id
    assert failed.status.value == "error" and failed.input_tokens == 0
    assert answered.status.value == "success" and answered.output_tokens == 20


def test_cache_hits_and_writes_come_from_litellms_usage_object() -> None:
    openai = event(to_event(payload("cached"), KEY_USER))
    assert (openai.input_tokens, openai.cached_input_tokens, openai.cache_write_tokens) == (
        2000, 1500, 0)  # fmt: skip
    anthropic = event(to_event(payload("cached_anthropic_haiku45"), KEY_USER))
    assert (anthropic.provider, anthropic.model) == ("anthropic", "claude-haiku-4-5-20251001")
    assert (anthropic.input_tokens, anthropic.cached_input_tokens,
            anthropic.cache_write_tokens, anthropic.output_tokens) == (3000, 1000, 500, 40)  # fmt: skip


@pytest.mark.parametrize("name", ["cached_anthropic_haiku45", "cached", "success",
                                  "streaming_anthropic_haiku45"])  # fmt: skip
def test_our_catalog_prices_the_mapped_event_as_litellm_did(name: str) -> None:
    """The names match our import of LiteLLM's map, and our exact price equals its float
    `response_cost` (to its own float precision)."""
    recorded = payload(name)
    mapped = event(to_event(recorded, KEY_USER))
    catalog = load_litellm(ROOT / "data" / "litellm-model-prices-1.110.2.json")
    [entry] = [e for e in catalog.entries
               if (e.provider.api_type, e.model_name) == (mapped.provider, mapped.model)]  # fmt: skip
    row = entry.price
    price = Price(uuid.uuid4(), mapped.model, row.input_per_1k, row.output_per_1k,
                  row.cache_input_per_1k, row.cache_hit_per_1k, datetime(2020, 1, 1, tzinfo=UTC),
                  None, row.components)  # fmt: skip
    ours = vendor_cost(mapped, price).usd
    assert ours == Decimal(str(recorded["response_cost"])).quantize(Decimal("1E-8"))
    assert mapped.gateway_cost_usd is not None  # the hint the books keep next to ours
    assert mapped.gateway_cost_usd.quantize(Decimal("1E-8")) == ours


def test_litellms_float_cost_is_a_hint_to_ten_decimals_outside_the_fingerprint() -> None:
    recorded = payload("streaming_include_usage")
    assert recorded["response_cost"] == 2.1000000000000002e-06
    mapped = event(to_event(recorded, KEY_USER))
    assert str(mapped.gateway_cost_usd) == "0.0000021000"
    unpriced = event(to_event({**recorded, "response_cost": None}, KEY_USER))
    assert unpriced.gateway_cost_usd is None
    assert unpriced.fingerprint() == mapped.fingerprint()  # the same request either way
    for odd in (True, float("nan"), float("inf"), -1.0, "0.5"):
        assert "gateway_cost_usd" not in to_event({**recorded, "response_cost": odd}, KEY_USER)


def test_a_streamed_call_is_complete_and_priced_on_its_counted_tokens() -> None:
    mapped = event(to_event(payload("streaming"), KEY_USER))
    assert mapped.is_streaming_complete
    assert (mapped.input_tokens, mapped.output_tokens) == (9, 1)


def test_a_failed_call_is_an_error_with_litellms_message() -> None:
    mapped = event(to_event(payload("failure"), KEY_USER))
    assert mapped.status.value == "error"
    assert mapped.error_message is not None
    assert mapped.error_message.startswith("litellm.RateLimitError")
    assert (mapped.input_tokens, mapped.output_tokens) == (0, 0)


def test_a_call_that_reached_no_provider_is_rejected() -> None:
    for recorded in payload("failure_unknown_model"):
        refused = to_event(recorded, KEY_USER)
        assert isinstance(refused, Rejection) and refused.reason is Reason.UNKNOWN_PROVIDER


def test_the_billed_user_comes_from_the_chosen_field() -> None:
    recorded = payload("with_user")
    end_user = event(to_event(recorded, BilledUser.parse("end_user")))
    assert end_user.gateway_user is not None and end_user.gateway_user.id == "end-user-42"
    tagged = recorded | {"request_tags": ["User-Agent: OpenAI", "customer=acme"]}
    by_tag = event(to_event(tagged, BilledUser.parse("tag:customer=")))
    assert by_tag.gateway_user is not None and by_tag.gateway_user.id == "acme"
    nobody = to_event(payload("success"), BilledUser.parse("user_api_key_team_id"))
    assert isinstance(nobody, Rejection) and nobody.reason is Reason.UNKNOWN_USER
    assert "user_api_key_team_id" in nobody.detail


def test_a_bad_user_source_setting_is_refused() -> None:
    for bad in ("tag", "tag:", "end_user:x", "email"):
        with pytest.raises(ValueError):
            BilledUser.parse(bad)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"litellm_call_id": None, "id": None}, Reason.SCHEMA_VIOLATION),
        ({"status": "pending"}, Reason.SCHEMA_VIOLATION),
        ({"startTime": "yesterday"}, Reason.SCHEMA_VIOLATION),
        ({"model": ""}, Reason.UNKNOWN_MODEL),
    ],
)
def test_a_payload_that_is_not_a_call_is_rejected(change: dict[str, Any], reason: Reason) -> None:
    refused = to_event(payload("success") | change, KEY_USER)
    assert isinstance(refused, Rejection) and refused.reason is reason
    assert isinstance(to_event([1, 2], KEY_USER), Rejection)


# Contract v1.4. The recorded payloads come from mock responses, which carry no usage
# details; these add them where LiteLLM 1.110.2 puts them (its `Usage` object dumped into
# `metadata.usage_object`, the response's own `service_tier`, `cost_breakdown`).

V1_4_FIELDS = {"service_tier", "cache_write_1h_tokens", "reasoning_tokens", "audio_input_tokens",
               "image_input_tokens", "audio_output_tokens", "web_search_requests"}  # fmt: skip


def with_usage(name: str, **details: Any) -> Any:
    recorded = payload(name)
    recorded["metadata"]["usage_object"] |= details
    return recorded


@pytest.mark.parametrize("name", ["success", "cached", "cached_anthropic_haiku45", "streaming",
                                  "streaming_include_usage", "failure", "with_user"])  # fmt: skip
def test_a_call_without_details_maps_to_an_event_without_v1_4_fields(name: str) -> None:
    """So a worker that predates v1.4 still takes the plain calls of an upgraded proxy."""
    mapped = to_event(payload(name), KEY_USER)
    assert isinstance(mapped, dict) and not V1_4_FIELDS & set(mapped)


def test_anthropics_one_hour_writes_web_searches_and_tier_carry_over() -> None:
    recorded = with_usage(
        "cached_anthropic_haiku45",
        prompt_tokens_details={"cached_tokens": 1000, "cache_write_tokens": 500,
                               "cache_creation_tokens": 500, "text_tokens": 1500,
                               "cache_creation_token_details": {
                                   "ephemeral_5m_input_tokens": 200,
                                   "ephemeral_1h_input_tokens": 300}},
        completion_tokens_details={"reasoning_tokens": 12, "text_tokens": 28},
        server_tool_use={"web_search_requests": 2, "tool_search_requests": None},
        service_tier="priority", inference_geo="not_available",
    )  # fmt: skip
    mapped = event(to_event(recorded, KEY_USER))
    assert (mapped.input_tokens, mapped.cached_input_tokens, mapped.cache_write_tokens,
            mapped.output_tokens) == (3000, 1000, 500, 40)  # fmt: skip
    assert (mapped.cache_write_1h_tokens, mapped.reasoning_tokens,
            mapped.web_search_requests, mapped.service_tier) == (300, 12, 2, "priority")  # fmt: skip


def test_openais_audio_image_and_reasoning_details_carry_over() -> None:
    recorded = with_usage(
        "cached",
        prompt_tokens_details={"cached_tokens": 1500, "audio_tokens": 300, "image_tokens": 100,
                               "cached_tokens_details": {"audio_tokens": 100}},
        completion_tokens_details={"reasoning_tokens": 20, "audio_tokens": 10,
                                   "accepted_prediction_tokens": None, "text_tokens": 20},
    )  # fmt: skip
    recorded["response"]["service_tier"] = "default"
    mapped = event(to_event(recorded, KEY_USER))
    assert (mapped.audio_input_tokens, mapped.image_input_tokens, mapped.reasoning_tokens,
            mapped.audio_output_tokens) == (200, 100, 20, 10)  # fmt: skip
    assert mapped.service_tier == "standard"


def test_geminis_grounding_searches_are_web_search_requests() -> None:
    recorded = with_usage("success", prompt_tokens_details={"web_search_requests": 1})
    assert event(to_event(recorded, KEY_USER)).web_search_requests == 1


@pytest.mark.parametrize(
    ("served", "in_usage", "priced", "tier"),
    [
        ("priority", None, "priority", "priority"),
        (None, "batch", None, "batch"),  # Anthropic reports it; LiteLLM has no batch tier
        ("default", None, None, "standard"),
        (None, None, "flex", "flex"),  # asked for, not reported back (a stream, say)
        (None, None, None, "standard"),
    ],
)
def test_the_tier_is_the_one_reported_else_the_one_litellm_priced(
    served: str | None, in_usage: str | None, priced: str | None, tier: str
) -> None:
    recorded = with_usage("cached", service_tier=in_usage)
    recorded["response"]["service_tier"] = served
    recorded["cost_breakdown"]["service_tier"] = priced
    assert event(to_event(recorded, KEY_USER)).service_tier == tier


def test_a_tier_or_detail_the_contract_cannot_hold_is_refused() -> None:
    odd_detail = with_usage("success", completion_tokens_details={"reasoning_tokens": 1.5})
    for recorded, named in [
        (payload("success") | {"cost_breakdown": {"service_tier": "fast"}},
         "`cost_breakdown.service_tier` 'fast'"),
        (payload("success") | {"response": {"service_tier": "scale"}},
         "`response.service_tier` 'scale'"),
        (odd_detail, "`usage.completion_tokens_details.reasoning_tokens` must be an integer"),
    ]:  # fmt: skip
        refused = to_event(recorded, KEY_USER)
        assert isinstance(refused, Rejection) and refused.reason is Reason.SCHEMA_VIOLATION
        assert named in refused.detail
