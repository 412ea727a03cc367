"""The gateway API's pure parts: body splitting, verdicts, batch planning, answers, keys."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.api import accounts, ingest, keys
from pipeline.api.problems import Problem
from pipeline.core import records
from pipeline.core.events import UsageEvent

NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)


def event(user: uuid.UUID, **over: object) -> dict[str, object]:
    started = NOW - timedelta(minutes=1)
    return {
        "request_id": str(uuid.uuid4()), "user_id": str(user), "provider": "openai",
        "model": "gpt-4o", "input_tokens": 10, "output_tokens": 20,
        "started_at": started.isoformat(), "completed_at": (started + timedelta(seconds=1)).isoformat(),
    } | over  # fmt: skip


def test_a_body_is_one_object_an_array_or_ndjson_each_item_its_own_bytes() -> None:
    a, b = json.dumps(event(uuid.uuid4())).encode(), json.dumps(event(uuid.uuid4())).encode()
    assert ingest.split_body("application/json", a, 10) == [a]
    assert ingest.split_body("application/json", b"[" + a + b" , " + b + b"]", 10) == [a, b]
    assert ingest.split_body("application/x-ndjson", a + b"\n\n" + b + b"\n", 10) == [a, b]


@pytest.mark.parametrize(
    ("content_type", "body", "slug"),
    [
        ("application/json", b"[1,", "bad-request"),
        ("application/json", b"[]", "bad-request"),
        ("application/x-ndjson", b"\n \n", "bad-request"),
        ("text/csv", b"a,b", "unsupported-media-type"),
        ("application/json", b"[" + b",".join([b"{}"] * 4) + b"]", "payload-too-large"),
    ],
)
def test_bodies_that_are_not_events_are_problems(content_type: str, body: bytes, slug: str) -> None:
    with pytest.raises(Problem) as refused:
        ingest.split_body(content_type, body, 3)
    assert refused.value.slug == slug


def test_accepted_events_are_planned_into_batch_records_of_one_partition() -> None:
    users = [uuid.uuid4() for _ in range(6)]
    items = [json.dumps(event(users[i % 6])).encode() for i in range(40)]
    items.insert(7, b'{"not": "an event"}')
    verdicts = ingest.judge(items, NOW, timedelta(minutes=5))
    planned = ingest.plan(items, verdicts, partitions=4)
    carried = sorted(p for record in planned for p in record.positions)
    assert carried == [i for i in range(41) if i != 7]
    for record in planned:
        values = records.split(record.value)
        assert list(values) == [items[p] for p in record.positions]  # the original bytes
        parts = {records.partition_of(str(verdicts[p].user_id).encode(), 4)  # type: ignore[union-attr]
                 for p in record.positions}  # fmt: skip
        assert parts == {records.partition_of(record.key, 4)}


def test_results_keep_request_order_and_say_what_was_not_published() -> None:
    user = uuid.uuid4()
    items = [json.dumps(event(user)).encode(), b"nope", json.dumps(event(user)).encode()]
    verdicts = ingest.judge(items, NOW, timedelta(minutes=5))
    answers = ingest.results(verdicts, unpublished={2})
    assert [(a["index"], a["status"]) for a in answers] == [
        (0, "accepted"), (1, "rejected"), (2, "not_published")]  # fmt: skip
    assert answers[1]["reason"] == "malformed_json"


def test_a_restricted_key_finds_the_events_of_other_users() -> None:
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    items = [json.dumps(event(u)).encode() for u in (mine, theirs, mine)]
    verdicts = ingest.judge(items, NOW, timedelta(minutes=5))
    assert ingest.foreign_users(verdicts, frozenset({mine})) == [1]
    assert ingest.foreign_users(verdicts, None) == []
    assert all(isinstance(v, UsageEvent) for v in verdicts)


@pytest.mark.parametrize(
    ("balance", "status"), [(-1, "overdrawn"), (0, "exhausted"), (99, "low"), (100, "ok")]
)
def test_status_of_a_balance(balance: int, status: str) -> None:
    assert accounts.status(balance, low_water=100) == status


def test_entitlement_needs_the_balance_to_cover_the_request() -> None:
    account = accounts.Account(uuid.uuid4(), 500, None, NOW)
    assert accounts.entitlement_answer(account, 500, 100)["allowed"] is True
    refused = accounts.entitlement_answer(account, 501, 100)
    assert (refused["allowed"], refused["shortfall"]) == (False, 1)
    empty = accounts.Account(uuid.uuid4(), 0, None, NOW)
    assert accounts.entitlement_answer(empty, 0, 100)["allowed"] is False


def test_tokens_are_random_found_by_prefix_and_compared_as_digests() -> None:
    token = keys.new_token()
    assert token.startswith(keys.TOKEN_PREFIX) and len(token) > 40
    assert keys.new_token() != token
    assert keys.prefix_of(token) == token[: keys.PREFIX_LENGTH]
    assert keys.prefix_of("upk_short") is None and keys.prefix_of("Basic abc") is None
    stored = keys.digest(token)
    assert keys.matches(token, stored) and not keys.matches(token[:-1] + "x", stored)
    assert keys.allows(keys.Scope.ADMIN, keys.Scope.INGEST)
    assert not keys.allows(keys.Scope.READ, keys.Scope.INGEST)
