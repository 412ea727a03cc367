"""A gateway's own users (contract v1.2): linked with `gateway-users`, booked for our user
in the batch's transaction, dead-lettered as unknown_user when unlinked."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.core.events import gateway_alias
from tests.integration.test_booker import Sink, book, event, records
from tests.integration.test_money import new_user, rows

pytestmark = pytest.mark.integration


def cli(db: str, *args: str) -> Any:
    return CliRunner().invoke(main, ["gateway-users", *args], env={"DATABASE_URL": db})


def gateway_event(external_id: str, **over: Any) -> bytes:
    """An event of LiteLLM's user `external_id`: its alias as user_id, the pair named."""
    alias = gateway_alias("litellm", external_id)
    named = {"gateway": "litellm", "id": external_id}
    return event(alias, gateway_user=named, **over)


def test_a_linked_gateway_user_is_billed_to_our_user(seeded_db: str) -> None:
    user = new_user(seeded_db, credits=10_000)
    linked = cli(seeded_db, "link", "litellm", "alice@example.com", str(user))
    assert linked.exit_code == 0, linked.output
    assert str(gateway_alias("litellm", "alice@example.com")) in linked.output

    ours = event(user)
    result = book(seeded_db, records(gateway_event("alice@example.com"), ours), Sink())

    assert result.outcomes == {"charged": 2}
    assert rows(seeded_db, "SELECT DISTINCT user_id FROM token_usage_ledger") == [(user,)]
    assert rows(seeded_db, "SELECT DISTINCT user_id FROM credit_deduction_ledger") == [(user,)]
    assert rows(seeded_db, "SELECT total_requests FROM token_usage_daily_summary "
                "WHERE user_id = %s", user) == [(2,)]  # fmt: skip


def test_a_redelivered_gateway_event_books_once(seeded_db: str) -> None:
    user = new_user(seeded_db, credits=10_000)
    assert cli(seeded_db, "link", "litellm", "bob", str(user)).exit_code == 0
    value = gateway_event("bob")

    first = book(seeded_db, records(value, value), Sink())
    again = book(seeded_db, records(value), Sink())

    assert first.outcomes == {"charged": 1, "duplicate": 1}
    assert again.outcomes == {"duplicate": 1}
    assert rows(seeded_db, "SELECT count(*) FROM token_usage_ledger") == [(1,)]


def test_an_unlinked_gateway_user_is_dead_lettered_with_its_id(seeded_db: str) -> None:
    sink = Sink()
    value = gateway_event("nobody-42")

    result = book(seeded_db, records(value), sink)

    assert result.outcomes == {"rejected": 1}
    [(topic, _key, dead, headers)] = sink.sent
    assert topic == "dlq"
    assert dict(headers)["dlq.reason"] == b"unknown_user"
    assert "'nobody-42'" in dict(headers)["dlq.detail"].decode()
    assert dead == value  # the original bytes


def test_an_event_whose_user_id_is_not_the_alias_is_a_schema_violation(seeded_db: str) -> None:
    user = new_user(seeded_db, credits=10_000)
    assert cli(seeded_db, "link", "litellm", "carol", str(user)).exit_code == 0
    sink = Sink()
    forged = event(user, gateway_user={"gateway": "litellm", "id": "carol"})

    result = book(seeded_db, records(forged), sink)

    assert result.outcomes == {"rejected": 1}
    assert dict(sink.sent[0][3])["dlq.reason"] == b"schema_violation"
    assert rows(seeded_db, "SELECT count(*) FROM token_usage_ledger") == [(0,)]


def test_links_are_listed_refused_and_removed(seeded_db: str) -> None:
    first, second = new_user(seeded_db), new_user(seeded_db)
    assert cli(seeded_db, "link", "litellm", "dave", str(first)).exit_code == 0
    assert cli(seeded_db, "link", "litellm", "dave", str(first)).exit_code == 0  # again: no-op

    taken = cli(seeded_db, "link", "litellm", "dave", str(second))
    assert taken.exit_code == 1
    assert f"linked to user {first}; unlink it first" in taken.output
    assert cli(seeded_db, "link", "litellm", "erin", str(uuid.uuid4())).output.startswith(
        "Error: no user "
    )
    bad = cli(seeded_db, "link", "Lite LLM", "x", str(first))
    assert bad.exit_code == 2 and "gateway:" in bad.output

    listed = cli(seeded_db, "list").output
    assert "dave" in listed and str(first) in listed and "erin" not in listed

    assert cli(seeded_db, "unlink", "litellm", "dave").exit_code == 0
    assert cli(seeded_db, "list").output.strip() == "no links"
    gone = cli(seeded_db, "unlink", "litellm", "dave")
    assert gone.exit_code == 1 and "is not linked" in gone.output


def test_a_gateways_own_cost_is_kept_beside_ours_and_reported_per_model(seeded_db: str) -> None:
    user = new_user(seeded_db, credits=100_000)
    hinted = [event(user, gateway_cost_usd=cost) for cost in ("0.0350000001", "0.04")]
    result = book(seeded_db, records(*hinted, event(user)), Sink())
    assert result.outcomes == {"charged": 3}
    ledger = rows(seeded_db, "SELECT vendor_cost, gateway_cost_usd FROM token_usage_ledger "
                  "ORDER BY gateway_cost_usd NULLS LAST")  # fmt: skip
    assert ledger == [(Decimal("0.03500000"), Decimal("0.0350000001")),
                      (Decimal("0.03500000"), Decimal("0.0400000000")),
                      (Decimal("0.03500000"), None)]  # fmt: skip
    otherwise = json.dumps({**json.loads(hinted[0]), "gateway_cost_usd": "0.5"}).encode()
    again = book(seeded_db, records(otherwise), Sink())
    assert again.outcomes == {"duplicate": 1}  # the hint is not part of the request

    day = datetime.now(UTC).date().isoformat()
    report = CliRunner().invoke(main, ["report", "daily", "--from", day, "--to", day, "--by",
                                       "model", "--format", "json"],
                                env={"DATABASE_URL": seeded_db})  # fmt: skip
    assert report.exit_code == 0, report.output
    [gpt4o] = json.loads(report.output)
    assert (gpt4o["requests"], gpt4o["gateway_costed_requests"]) == (3, 2)
    assert Decimal(gpt4o["gateway_cost_gap_usd"]) == Decimal("0.0050000001")
