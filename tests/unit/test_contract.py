import json
from pathlib import Path

from pipeline.events import json_schema

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
