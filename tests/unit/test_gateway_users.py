"""Contract v1.2's gateway users: the alias rule, the fingerprint left as it was, linking."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from pipeline.core import gateway_users
from pipeline.core.events import GatewayUser, Rejection, UsageEvent, gateway_alias
from pipeline.errors import Reason

STARTED = datetime(2026, 11, 30, 12, tzinfo=UTC)


def event(user: uuid.UUID, **over: object) -> UsageEvent:
    fields: dict[str, object] = {
        "request_id": str(uuid.uuid4()), "user_id": str(user), "provider": "openai",
        "model": "gpt-4o", "input_tokens": 10, "output_tokens": 5,
        "started_at": STARTED.isoformat(),
        "completed_at": (STARTED + timedelta(seconds=1)).isoformat(),
    } | over  # fmt: skip
    return UsageEvent.model_validate_json(json.dumps(fields))


def of(external_id: str) -> UsageEvent:
    return event(gateway_alias("litellm", external_id),
                 gateway_user={"gateway": "litellm", "id": external_id})  # fmt: skip


def test_the_alias_is_a_uuid5_of_gateway_and_id() -> None:
    alias = gateway_alias("litellm", "alice")
    assert alias.version == 5
    assert alias == gateway_alias("litellm", "alice")
    assert alias not in {gateway_alias("litellm", "alice2"), gateway_alias("kong", "alice")}
    # a gateway name cannot hold the separator, so no two pairs share a name to hash
    with pytest.raises(ValidationError):
        GatewayUser(gateway="a\x1fb", id="c")


def test_a_user_id_that_is_not_the_alias_is_refused() -> None:
    with pytest.raises(ValidationError, match="not the alias of gateway_user"):
        event(uuid.uuid4(), gateway_user={"gateway": "litellm", "id": "alice"})
    with pytest.raises(ValidationError, match="gateway"):
        GatewayUser(gateway="Lite LLM", id="alice")


def test_the_fingerprint_of_a_v1_event_is_what_it_was() -> None:
    """gateway_user is not serialized: events booked before v1.2 keep their fingerprints."""
    plain = event(uuid.uuid4())
    assert b"gateway_user" not in plain.__pydantic_serializer__.to_json(plain)
    named = of("alice")
    same_without = named.model_copy(update={"gateway_user": None})
    assert named.fingerprint() == same_without.fingerprint()
    assert plain.fingerprint() == hashlib.sha256(plain.model_dump_json().encode()).digest()


def test_linking_books_each_event_for_our_user_or_rejects_it() -> None:
    ours, theirs = uuid.uuid4(), uuid.uuid4()
    direct, alice, bob, alice_again = event(ours), of("alice"), of("bob"), of("alice")
    bad = Rejection(Reason.MALFORMED_JSON, "x")
    batch = [direct, alice, bad, bob, alice_again]

    assert gateway_users.wanted(batch) == [("litellm", "alice"), ("litellm", "bob")]
    done = gateway_users.linked(batch, {("litellm", "alice"): theirs})

    assert done[0] is direct and done[2] is bad
    assert isinstance(done[1], UsageEvent) and done[1].user_id == theirs
    assert done[1].request_id == alice.request_id
    assert isinstance(done[3], Rejection) and done[3].reason is Reason.UNKNOWN_USER
    assert "'bob'" in done[3].detail
    assert isinstance(done[4], UsageEvent) and done[4].user_id == theirs
    assert gateway_users.wanted([direct, bad]) == []
