import json
from pathlib import Path

from pipeline.core.events import json_schema

SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "usage-event.v1.json"


def test_shipped_json_schema_matches_the_pydantic_model():
    assert json.loads(SCHEMA.read_text()) == json_schema(), (
        "regenerate with: python -m pipeline schema > schemas/usage-event.v1.json"
    )


def test_schema_names_every_contract_field():
    props = set(json_schema()["properties"])
    assert {"request_id", "user_id", "provider", "model", "input_tokens", "output_tokens",
            "cached_input_tokens", "cache_write_tokens", "started_at", "completed_at",
            "status", "region"} <= props  # fmt: skip


RECORD_SCHEMA = SCHEMA.parent / "usage-record.v1.1.json"


def test_shipped_record_schema_matches_and_accepts_both_shapes():
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    from pipeline.core.records import BATCH_RECORD_MAX
    from pipeline.core.records import json_schema as record_schema

    assert json.loads(RECORD_SCHEMA.read_text()) == record_schema(), (
        "regenerate with: python -m pipeline schema --record > schemas/usage-record.v1.1.json"
    )
    registry = Registry().with_resource(
        "usage-event.v1.json",
        Resource.from_contents(
            json_schema() | {"$schema": Draft202012Validator.META_SCHEMA["$id"]}
        ),
    )
    validator = Draft202012Validator(record_schema(), registry=registry)
    event = {
        "request_id": "0b6f5a4e-3c1d-4a8e-9d55-6f1d2f7f0a11",
        "user_id": "5b1f0c1e-8a4f-4a52-9b1e-2f1d3c4b5a69",
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": 1000,
        "output_tokens": 2000,
        "started_at": "2026-11-25T11:59:00+00:00",
        "completed_at": "2026-11-25T11:59:02+00:00",
    }
    assert validator.is_valid(event)
    assert validator.is_valid([event, event])
    assert not validator.is_valid([])
    assert not validator.is_valid([event] * (BATCH_RECORD_MAX + 1))
    assert not validator.is_valid([event | {"input_tokens": -1}])


def test_schema_names_the_v1_4_fields_and_checks_them():
    from jsonschema import Draft202012Validator

    schema = json_schema()
    assert {"service_tier", "cache_write_1h_tokens", "reasoning_tokens", "audio_input_tokens",
            "image_input_tokens", "audio_output_tokens", "web_search_requests"} <= set(
        schema["properties"])  # fmt: skip
    assert schema["$defs"]["ServiceTier"]["enum"] == ["standard", "batch", "flex", "priority"]
    validator = Draft202012Validator(schema)
    event = {
        "request_id": "0b6f5a4e-3c1d-4a8e-9d55-6f1d2f7f0a11",
        "user_id": "5b1f0c1e-8a4f-4a52-9b1e-2f1d3c4b5a69",
        "provider": "openai",
        "model": "o3",
        "input_tokens": 1000,
        "output_tokens": 2000,
        "started_at": "2026-11-25T11:59:00+00:00",
        "completed_at": "2026-11-25T11:59:02+00:00",
    }
    assert validator.is_valid(event | {"service_tier": "flex", "reasoning_tokens": 1500})
    assert not validator.is_valid(event | {"service_tier": "default"})  # a provider's spelling
    assert not validator.is_valid(event | {"web_search_requests": -1})
