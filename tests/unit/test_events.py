import json
from datetime import UTC, datetime, timedelta
from uuid import uuid4

from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.events import Rejection, UsageEvent, decode, normalize_usage
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
