import json
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from pipeline.core.events import (
    Rejection,
    ServiceTier,
    UsageEvent,
    decode,
    gateway_alias,
    normalize_usage,
    validate_json,
)
from pipeline.errors import Reason

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
SKEW = timedelta(minutes=5)


def event(**over):
    base = {
        "request_id": str(uuid4()),
        "user_id": str(uuid4()),
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": 1000,
        "output_tokens": 2000,
        "started_at": "2026-11-25T11:59:00+00:00",
        "completed_at": "2026-11-25T11:59:02.500+00:00",
    }
    base.update(over)
    return json.dumps({k: v for k, v in base.items() if v is not None}).encode()


def reason_of(raw):
    result = decode(raw, NOW, SKEW)
    return result.reason if isinstance(result, Rejection) else None


def test_valid_event_with_defaults():
    result = decode(event(), NOW, SKEW)
    assert isinstance(result, UsageEvent)
    assert result.cached_input_tokens == 0 and result.request_type == "completion"
    assert result.processing_time_ms == 2500


def test_malformed_json_and_non_objects():
    assert reason_of(b"{not json") is Reason.MALFORMED_JSON
    assert reason_of(b"\xff\xfe") is Reason.MALFORMED_JSON
    assert reason_of(None) is Reason.MALFORMED_JSON
    assert reason_of(b"[1, 2]") is Reason.SCHEMA_VIOLATION


def test_schema_violations():
    assert reason_of(event(request_id="nope")) is Reason.SCHEMA_VIOLATION
    assert reason_of(event(input_tokens=-1)) is Reason.SCHEMA_VIOLATION
    assert reason_of(event(cached_input_tokens=1001)) is Reason.SCHEMA_VIOLATION
    assert (
        reason_of(event(started_at="2026-11-25T11:59:00")) is Reason.SCHEMA_VIOLATION
    )  # no offset
    assert reason_of(event(completed_at="2026-11-25T11:58:00+00:00")) is Reason.SCHEMA_VIOLATION
    assert reason_of(event(status="exploded")) is Reason.SCHEMA_VIOLATION
    assert reason_of(event(surprise=1)) is Reason.SCHEMA_VIOLATION


def test_started_at_too_far_in_the_future():
    future = (NOW + timedelta(minutes=6)).isoformat()
    late = (NOW + timedelta(minutes=7)).isoformat()
    result = decode(event(started_at=future, completed_at=late), NOW, SKEW)
    assert isinstance(result, Rejection) and "future" in result.detail
    ok = (NOW + timedelta(minutes=4)).isoformat()
    assert isinstance(decode(event(started_at=ok, completed_at=late), NOW, SKEW), UsageEvent)


def test_openai_usage_object_is_normalized():
    usage = {"prompt_tokens": 1200, "completion_tokens": 300,
             "prompt_tokens_details": {"cached_tokens": 1000}}  # fmt: skip
    result = decode(event(input_tokens=None, output_tokens=None, usage=usage), NOW, SKEW)
    assert isinstance(result, UsageEvent)
    assert (result.input_tokens, result.output_tokens, result.cached_input_tokens) == (
        1200,
        300,
        1000,
    )


def test_anthropic_usage_object_is_normalized():
    usage = {"input_tokens": 50, "output_tokens": 400, "cache_read_input_tokens": 2000,
             "cache_creation_input_tokens": 300}  # fmt: skip
    result = decode(event(input_tokens=None, output_tokens=None, usage=usage), NOW, SKEW)
    assert isinstance(result, UsageEvent)
    assert result.input_tokens == 2350
    assert (result.cached_input_tokens, result.cache_write_tokens) == (2000, 300)


def test_usage_and_flat_tokens_together_are_rejected():
    assert reason_of(event(usage={"prompt_tokens": 1})) is Reason.SCHEMA_VIOLATION


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6))
def test_anthropic_normalization_keeps_every_token(uncached, out, read, write):
    flat = normalize_usage({"input_tokens": uncached, "output_tokens": out,
                            "cache_read_input_tokens": read, "cache_creation_input_tokens": write})  # fmt: skip
    uncached_after = flat["input_tokens"] - flat["cached_input_tokens"] - flat["cache_write_tokens"]
    assert uncached_after == uncached and flat["output_tokens"] == out


def test_fingerprint_same_for_redelivery_in_another_shape_and_differs_on_change():
    rid, uid = str(uuid4()), str(uuid4())
    flat = decode(event(request_id=rid, user_id=uid, input_tokens=1200, output_tokens=300,
                        cached_input_tokens=1000), NOW, SKEW)  # fmt: skip
    usage = {"prompt_tokens": 1200, "completion_tokens": 300,
             "prompt_tokens_details": {"cached_tokens": 1000}}  # fmt: skip
    shaped = decode(event(request_id=rid, user_id=uid, input_tokens=None, output_tokens=None,
                          usage=usage), NOW, SKEW)  # fmt: skip
    changed = decode(event(request_id=rid, user_id=uid, input_tokens=1201, output_tokens=300,
                           cached_input_tokens=1000), NOW, SKEW)  # fmt: skip
    assert isinstance(flat, UsageEvent) and isinstance(shaped, UsageEvent)
    assert isinstance(changed, UsageEvent)
    assert flat.fingerprint() == shaped.fingerprint() != changed.fingerprint()


# Contract v1.4: service tier and the details of a request's tokens.

V1_4_DEFAULTS = {"service_tier": "standard", "cache_write_1h_tokens": 0, "reasoning_tokens": 0,
                 "audio_input_tokens": 0, "image_input_tokens": 0, "audio_output_tokens": 0,
                 "web_search_requests": 0}  # fmt: skip

BOOKED_BEFORE_V1_4 = {
    "request_id": "0b6f5a4e-3c1d-4a8e-9d55-6f1d2f7f0a11",
    "user_id": str(gateway_alias("litellm", "alice")),
    "gateway_user": {"gateway": "litellm", "id": "alice"},
    "subscription_id": "9d2c4a61-0f3e-4b7a-8c15-3e6f2a1b0c99",
    "provider": "anthropic",
    "model": "claude-sonnet-4-5",
    "input_tokens": 2350,
    "output_tokens": 400,
    "cached_input_tokens": 2000,
    "cache_write_tokens": 300,
    "streaming_segments": 12,
    "started_at": "2026-11-25T11:59:00+00:00",
    "completed_at": "2026-11-25T11:59:02.500+00:00",
    "status": "partial",
    "error_message": "stream cut",
    "is_streaming_complete": False,
    "region": "eu-west-1",
    "gateway_cost_usd": "0.0123",
}
"""An event and, below, its fingerprint as computed before v1.4 (commit 774fa50)."""
FINGERPRINT_BEFORE_V1_4 = "ff9985dde3e7ebc33cb3d32c45e8904648e1d2e5587c4a3a819cd0e39fe2a1d9"
_COUNTS = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens")


def v1_4(result):
    assert isinstance(result, UsageEvent), result
    return {name: getattr(result, name) for name in V1_4_DEFAULTS}


def decoded_usage(usage, **over):
    return decode(event(input_tokens=None, output_tokens=None, usage=usage, **over), NOW, SKEW)


def detail_of(result):
    assert isinstance(result, Rejection) and result.reason is Reason.SCHEMA_VIOLATION, result
    return result.detail


def test_v1_4_fields_default_to_what_earlier_events_meant():
    assert v1_4(decode(event(), NOW, SKEW)) == V1_4_DEFAULTS
    assert v1_4(decode(event(**V1_4_DEFAULTS), NOW, SKEW)) == V1_4_DEFAULTS
    assert ServiceTier.STANDARD == "standard"


def test_events_booked_before_v1_4_keep_their_fingerprints():
    flat = UsageEvent.model_validate_json(json.dumps(BOOKED_BEFORE_V1_4))
    assert flat.fingerprint().hex() == FINGERPRINT_BEFORE_V1_4
    shaped = {k: v for k, v in BOOKED_BEFORE_V1_4.items() if k not in _COUNTS} | {"usage": {
        "input_tokens": 50, "output_tokens": 400, "cache_read_input_tokens": 2000,
        "cache_creation_input_tokens": 300}}  # fmt: skip
    assert UsageEvent.model_validate_json(json.dumps(shaped)).fingerprint() == flat.fingerprint()
    openai = {k: v for k, v in shaped.items() if k != "usage"} | {
        "provider": "openai", "model": "gpt-4o",
        "usage": {"prompt_tokens": 2350, "completion_tokens": 400,
                  "prompt_tokens_details": {"cached_tokens": 2000}}}  # fmt: skip
    assert (UsageEvent.model_validate_json(json.dumps(openai)).fingerprint().hex()
            == "80d8665b661b843d629fec80c9ae64f5cd9df5d886c949e1eefaebf494cd766e")  # fmt: skip
    # the v1.4 fields stay out of the serialized event, as gateway_user and gateway_cost_usd do
    assert set(V1_4_DEFAULTS).isdisjoint(json.loads(flat.__pydantic_serializer__.to_json(flat)))


@st.composite
def v1_4_counts(draw):
    """Counts that keep every v1.4 rule, with a tier."""
    cached, write, audio, image = (draw(st.integers(0, 10**6)) for _ in range(4))
    reasoning, audio_out = draw(st.integers(0, 10**6)), draw(st.integers(0, 10**6))
    return {
        "input_tokens": cached + write + audio + image + draw(st.integers(0, 10**6)),
        "output_tokens": reasoning + audio_out + draw(st.integers(0, 10**6)),
        "cached_input_tokens": cached, "cache_write_tokens": write,
        "cache_write_1h_tokens": draw(st.integers(0, write)),
        "reasoning_tokens": reasoning, "audio_output_tokens": audio_out,
        "audio_input_tokens": audio, "image_input_tokens": image,
        "web_search_requests": draw(st.integers(0, 1000)),
        "service_tier": draw(st.sampled_from(ServiceTier)).value,
    }  # fmt: skip


@given(v1_4_counts())
def test_any_valid_v1_4_event_round_trips_and_is_identified_by_its_details(counts):
    rid, uid = str(uuid4()), str(uuid4())
    raw = event(request_id=rid, user_id=uid, **counts)
    result = UsageEvent.model_validate_json(raw)
    assert {name: getattr(result, name) for name in counts} == counts
    assert UsageEvent.model_validate_json(raw).fingerprint() == result.fingerprint()
    base = {name: counts[name] for name in _COUNTS}
    plain = UsageEvent.model_validate_json(event(request_id=rid, user_id=uid, **base))
    uses_v1_4 = any(counts[name] != default for name, default in V1_4_DEFAULTS.items())
    assert (result.fingerprint() != plain.fingerprint()) == uses_v1_4


@given(v1_4_counts(), st.sampled_from(sorted(V1_4_DEFAULTS)))
def test_changing_any_v1_4_field_changes_the_fingerprint(counts, name):
    rid, uid = str(uuid4()), str(uuid4())
    result = UsageEvent.model_validate_json(event(request_id=rid, user_id=uid, **counts))
    if name == "service_tier":
        other = "flex" if counts[name] != "flex" else "batch"
        changed = counts | {name: other}
    else:  # one more of it, and as many more of its whole so every rule still holds
        whole = {"cache_write_1h_tokens": ("cache_write_tokens", "input_tokens"),
                 "reasoning_tokens": ("output_tokens",), "audio_output_tokens": ("output_tokens",),
                 "audio_input_tokens": ("input_tokens",), "image_input_tokens": ("input_tokens",),
                 "web_search_requests": ()}[name]  # fmt: skip
        changed = counts | {n: counts[n] + 1 for n in (name, *whole)}
    again = UsageEvent.model_validate_json(event(request_id=rid, user_id=uid, **changed))
    assert again.fingerprint() != result.fingerprint()


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"cache_write_tokens": 300, "cache_write_1h_tokens": 301},
         "cache_write_1h_tokens exceed cache_write_tokens (301 > 300)"),
        ({"output_tokens": 100, "reasoning_tokens": 80, "audio_output_tokens": 21},
         "reasoning_tokens + audio_output_tokens exceed output_tokens (80 + 21 > 100)"),
        ({"input_tokens": 100, "cached_input_tokens": 40, "cache_write_tokens": 10,
          "audio_input_tokens": 30, "image_input_tokens": 21},
         "cached_input_tokens + cache_write_tokens + audio_input_tokens + image_input_tokens "
         "exceed input_tokens (40 + 10 + 30 + 21 > 100)"),
        ({"input_tokens": 100, "cached_input_tokens": 90, "cache_write_tokens": 11},
         "cached_input_tokens + cache_write_tokens exceed input_tokens (90 + 11 > 100)"),
        ({"reasoning_tokens": -1}, "reasoning_tokens: Input should be greater than or equal to 0"),
        ({"web_search_requests": 2**31}, "web_search_requests: Input should be less than or equal"),
        ({"image_input_tokens": 1.5}, "image_input_tokens: Input should be a valid integer"),
        ({"service_tier": "default"}, "service_tier: Input should be 'standard', 'batch', 'flex' or 'priority'"),
    ],
)  # fmt: skip
def test_each_v1_4_rule_refuses_with_a_clear_message(over, message):
    assert message in detail_of(decode(event(**over), NOW, SKEW))


@given(st.integers(0, 10**6), st.integers(1, 10**6), st.sampled_from(
    ["cache_write_1h_tokens", "reasoning_tokens", "audio_output_tokens", "audio_input_tokens",
     "image_input_tokens"]))  # fmt: skip
def test_a_part_larger_than_its_whole_is_refused(whole, excess, part):
    over = {"input_tokens": whole, "output_tokens": whole, "cache_write_tokens": whole,
            part: whole + excess}  # fmt: skip
    if part != "cache_write_1h_tokens":
        over["cache_write_tokens"] = 0
    assert "exceed" in detail_of(decode(event(**over), NOW, SKEW))


def test_openai_usage_details_are_normalized():
    # gpt-4o-audio-preview, a realtime-style breakdown of the hits, and an o-series answer
    usage = {"prompt_tokens": 2400, "completion_tokens": 900,
             "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 600,
                                       "image_tokens": 300, "text_tokens": 1500,
                                       "cached_tokens_details": {"text_tokens": 824,
                                                                 "audio_tokens": 200,
                                                                 "image_tokens": None}},
             "completion_tokens_details": {"reasoning_tokens": 512, "audio_tokens": 256,
                                           "accepted_prediction_tokens": 0,
                                           "rejected_prediction_tokens": 0}}  # fmt: skip
    result = decoded_usage(usage, service_tier="default")
    assert v1_4(result) == V1_4_DEFAULTS | {
        "audio_input_tokens": 400,
        "image_input_tokens": 300,
        "reasoning_tokens": 512,
        "audio_output_tokens": 256,
    }
    assert (result.input_tokens, result.output_tokens,
            result.cached_input_tokens) == (2400, 900, 1024)  # fmt: skip
    # as LiteLLM reports cache writes; the hits of a modality never make it negative
    litellm = {"prompt_tokens": 3000, "completion_tokens": 40,
               "prompt_tokens_details": {"cached_tokens": 1000, "cache_creation_tokens": 500,
                                         "audio_tokens": 0,
                                         "cached_tokens_details": {"audio_tokens": 7}}}  # fmt: skip
    written = decoded_usage(litellm)
    assert (written.cache_write_tokens, written.audio_input_tokens) == (500, 0)
    both = litellm | {
        "prompt_tokens_details": {"cache_write_tokens": 400, "cache_creation_tokens": None}
    }
    assert decoded_usage(both).cache_write_tokens == 400


@pytest.mark.parametrize(
    ("spelling", "tier"),
    [("default", "standard"), ("auto", "standard"), ("Standard", "standard"),
     ("standard_only", "standard"), (" FLEX ", "flex"), ("priority", "priority"),
     ("batch", "batch")],
)  # fmt: skip
def test_provider_service_tiers_beside_usage_are_ours_in_any_case(spelling, tier):
    openai = {"prompt_tokens": 10, "completion_tokens": 5}
    assert decoded_usage(openai, service_tier=spelling).service_tier == tier
    anthropic = {"input_tokens": 10, "output_tokens": 5, "service_tier": spelling}
    assert decoded_usage(anthropic).service_tier == tier
    assert decoded_usage(anthropic, service_tier=tier).service_tier == tier


def test_unknown_or_disagreeing_service_tiers_are_refused():
    openai = {"prompt_tokens": 10, "completion_tokens": 5}
    assert "`service_tier` 'scale' is not a service tier we bill" in detail_of(
        decoded_usage(openai, service_tier="scale"))  # fmt: skip
    assert "`usage.service_tier` 7 is not a service tier" in detail_of(
        decoded_usage(openai | {"service_tier": 7}))  # fmt: skip
    assert "service_tier flex and usage.service_tier priority disagree" in detail_of(
        decoded_usage(openai | {"service_tier": "priority"}, service_tier="flex"))  # fmt: skip
    assert decoded_usage(openai | {"service_tier": None}).service_tier == "standard"


def test_anthropic_cache_lifetimes_web_search_and_tier_are_normalized():
    usage = {"input_tokens": 120, "output_tokens": 800, "cache_read_input_tokens": 4000,
             "cache_creation_input_tokens": 1500,
             "cache_creation": {"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 1000},
             "server_tool_use": {"web_search_requests": 3, "web_fetch_requests": 1},
             "service_tier": "priority"}  # fmt: skip
    result = decoded_usage(usage)
    assert (result.input_tokens, result.cached_input_tokens, result.cache_write_tokens) == (
        5620, 4000, 1500)  # fmt: skip
    assert v1_4(result) == V1_4_DEFAULTS | {
        "cache_write_1h_tokens": 1000,
        "web_search_requests": 3,
        "service_tier": "priority",
    }
    # only the breakdown: the writes are its sum
    alone = {k: v for k, v in usage.items() if k != "cache_creation_input_tokens"}
    only_breakdown = decoded_usage(alone)
    assert (only_breakdown.cache_write_tokens, only_breakdown.input_tokens) == (1500, 5620)
    nothing = decoded_usage({"input_tokens": 10, "output_tokens": 5, "cache_creation": None,
                             "server_tool_use": None})  # fmt: skip
    assert v1_4(nothing) == V1_4_DEFAULTS and nothing.cache_write_tokens == 0


def test_gemini_usage_metadata_is_normalized():
    usage = {"promptTokenCount": 1800, "candidatesTokenCount": 300, "thoughtsTokenCount": 700,
             "totalTokenCount": 2800, "cachedContentTokenCount": 1000,
             "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 1000},
                                     {"modality": "AUDIO", "tokenCount": 500},
                                     {"modality": "IMAGE", "tokenCount": 300}],
             "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 800},
                                    {"modality": "AUDIO", "tokenCount": 200}],
             "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": 300}]}  # fmt: skip
    result = decoded_usage(usage, provider="gemini", model="gemini-2.5-flash")
    assert (result.input_tokens, result.output_tokens, result.cached_input_tokens) == (
        1800, 1000, 1000)  # fmt: skip
    assert v1_4(result) == V1_4_DEFAULTS | {
        "reasoning_tokens": 700,
        "audio_input_tokens": 300,
        "image_input_tokens": 300,
    }
    # candidates that already hold the thoughts (the total says so) are not added to twice
    inclusive = usage | {"candidatesTokenCount": 1000}
    assert decoded_usage(inclusive).output_tokens == 1000
    plain = decoded_usage({"promptTokenCount": 8, "candidatesTokenCount": 2})
    assert (plain.input_tokens, plain.output_tokens) == (8, 2) and v1_4(plain) == V1_4_DEFAULTS


@pytest.mark.parametrize(
    ("usage", "message"),
    [
        ({"prompt_tokens": 10, "completion_tokens_details": {"reasoning_tokens": "5"}},
         "`usage.completion_tokens_details.reasoning_tokens` must be an integer, not '5'"),
        ({"prompt_tokens": 10, "prompt_tokens_details": {"audio_tokens": 2.5}},
         "`usage.prompt_tokens_details.audio_tokens` must be an integer, not 2.5"),
        ({"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens_details": []}},
         "`usage.prompt_tokens_details.cached_tokens_details` must be an object"),
        ({"input_tokens": 10, "cache_creation": {"ephemeral_1h_input_tokens": True}},
         "`usage.cache_creation.ephemeral_1h_input_tokens` must be an integer, not True"),
        ({"input_tokens": 10, "server_tool_use": 3}, "`usage.server_tool_use` must be an object"),
        ({"promptTokenCount": "10"}, "`usage.promptTokenCount` must be an integer, not '10'"),
        ({"promptTokenCount": 10, "promptTokensDetails": {"AUDIO": 3}},
         "`usage.promptTokensDetails` must be a list"),
        ({"promptTokenCount": 10, "promptTokensDetails": [{"tokenCount": 3}]},
         "`usage.promptTokensDetails[0]` must be an object with a modality"),
        ({"promptTokenCount": 10, "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": 3.0}]},
         "`usage.promptTokensDetails[0].tokenCount` must be an integer, not 3.0"),
        ({"totalTokens": 10}, "`usage` is neither OpenAI (prompt_tokens), Anthropic (input_tokens) nor Gemini"),
        ({"promptTokenCount": 10, "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": 11}]},
         "audio_input_tokens + image_input_tokens exceed input_tokens (0 + 0 + 11 + 0 > 10)"),
    ],
)  # fmt: skip
def test_bad_provider_details_are_schema_violations_naming_them(usage, message):
    assert message in detail_of(decoded_usage(usage))


def test_usage_with_v1_4_counts_is_rejected_but_the_tier_beside_it_is_not():
    usage = {"prompt_tokens": 10, "completion_tokens": 5}
    assert "not both (reasoning_tokens)" in detail_of(decoded_usage(usage, reasoning_tokens=1))
    assert "not both (web_search_requests)" in detail_of(
        decoded_usage(usage, web_search_requests=1)
    )
    assert decoded_usage(usage, service_tier="priority").service_tier == "priority"


def test_a_redelivery_of_a_v1_4_event_in_another_shape_is_the_same_request():
    rid, uid = str(uuid4()), str(uuid4())
    flat = decode(event(request_id=rid, user_id=uid, input_tokens=1200, output_tokens=900,
                        cached_input_tokens=1000, reasoning_tokens=512,
                        service_tier="priority"), NOW, SKEW)  # fmt: skip
    shaped = decoded_usage({"prompt_tokens": 1200, "completion_tokens": 900,
                            "prompt_tokens_details": {"cached_tokens": 1000},
                            "completion_tokens_details": {"reasoning_tokens": 512}},
                           request_id=rid, user_id=uid, service_tier="priority")  # fmt: skip
    assert isinstance(flat, UsageEvent) and isinstance(shaped, UsageEvent)
    assert flat.fingerprint() == shaped.fingerprint()


def _verdict(validate, raw):
    """What a validation gives: the event with the fields it was given, or its errors."""
    try:
        found = validate(raw)
    except ValidationError as exc:
        return "refused", [(e["type"], e["loc"], e["msg"]) for e in exc.errors()]
    return found, found.model_fields_set


EQUAL_EVENTS = [
    event(),
    event(region=" eu-west ", request_type="embedding", error_message="no usage here"),
    event(error_message='a "usage" in the text', cached_input_tokens=400),
    event(
        usage={"prompt_tokens": 10, "completion_tokens": 5}, input_tokens=None, output_tokens=None
    ),
    event(input_tokens=None).replace(
        b"{", b'{"usag\\u0065": {"input_tokens": 3, "output_tokens": 1},', 1
    ),
    event(service_tier="priority", reasoning_tokens=100, output_tokens=2000),
    event(gateway_cost_usd="0.0012", status="error", error_message="rate limited"),
    event(gateway_cost_usd=0.12345678901234567, is_streaming_complete="false", input_tokens=7.0),
    event(output_tokens=-1),
    event(unknown_field=1),
    event(cached_input_tokens=900, cache_write_tokens=200),
    event(completed_at="2026-11-25T11:58:00+00:00"),
    b"{not json",
    b"[1, 2]",
    b"7",
]


@pytest.mark.parametrize("raw", EQUAL_EVENTS)
def test_the_fast_validation_gives_what_the_models_own_gives(raw):
    assert _verdict(validate_json, raw) == _verdict(UsageEvent.model_validate_json, raw)


FIELDS = st.sampled_from([*sorted(UsageEvent.model_fields), "usage"])
VALUES = (
    st.none()
    | st.integers(-2, 5000)
    | st.booleans()
    | st.floats(-1, 1e9, allow_nan=False)
    | st.sampled_from(["", " x ", "priority", "2026-11-25T11:59:00Z", "0.0012", "true", "12"])
    | st.sampled_from([{"prompt_tokens": 9, "completion_tokens": 2}, [1], {"id": "x"}])
)


@given(st.dictionaries(FIELDS, VALUES, max_size=6))
def test_the_fast_validation_agrees_on_any_mix_of_fields(over):
    raw = event(**over)
    assert _verdict(validate_json, raw) == _verdict(UsageEvent.model_validate_json, raw)
