"""The booker's own paths, in-process against the session's PostgreSQL: a retriable
failure retries the whole transaction, a value the schema refuses is split down to the one
event and dead-lettered, and a worker told to stop gives up unacknowledged."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from pipeline.schema import seed
from pipeline.stream.booker import BatchNotBooked, BatchResult, Booker, BookingConfig
from pipeline.stream.dlq import SourceMessage
from tests.integration.pipeline_harness import make_event
from tests.integration.test_money import new_user, rows

pytestmark = pytest.mark.integration


@pytest.fixture
def books(migrated_db: str) -> str:
    """A migrated database with the reference data every environment starts with."""
    with psycopg.connect(migrated_db) as conn:
        seed.seed(conn)
    return migrated_db


class Sink:
    """The booker's `send`: records what it was given; fails the first `failures` calls."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.sent: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]] = []

    async def __call__(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker unreachable")
        self.sent.append((topic, key, value, headers))


def records(*values: bytes) -> list[SourceMessage]:
    return [SourceMessage("usage", 0, offset, b"k", v) for offset, v in enumerate(values)]


def book(db: str, messages: list[SourceMessage], sink: Sink, stopping: bool = False) -> BatchResult:
    config = BookingConfig(
        "dlq", "alerts", Decimal("0.001"), 0, timedelta(minutes=5), consumer_group="test",
        max_backoff_seconds=0.05,
    )  # fmt: skip

    async def go() -> BatchResult:
        async with AsyncConnectionPool(db, min_size=1, max_size=2, open=False) as pool:
            booker = Booker(pool, sink, config)
            if stopping:
                booker.stopping.set()
            [(events, decoded)] = list(booker.chunks(messages))
            return await booker.book(events, decoded)

    return asyncio.run(go())


def event(user: uuid.UUID, **over: Any) -> bytes:
    return json.dumps(make_event(user, **over)).encode()


def test_a_failed_dead_letter_send_retries_the_whole_transaction(books: str) -> None:
    user = new_user(books, credits=10_000)
    sink = Sink(failures=1)
    result = book(books, records(event(user), b"{not json", event(user)), sink)
    assert result.retries == 1
    assert result.outcomes == {"charged": 2, "rejected": 1}
    assert [(topic, value) for topic, _, value, _ in sink.sent] == [("dlq", b"{not json")]
    assert rows(books, "SELECT count(*) FROM token_usage_ledger") == [(2,)]
    usage = "SELECT count(*) FROM credit_deduction_ledger WHERE request_id IS NOT NULL"
    assert rows(books, usage) == [(2,)]  # the grant is the third row


def test_a_value_the_schema_refuses_dead_letters_that_event_alone(books: str) -> None:
    user = new_user(books, credits=10_000)
    poison = uuid.uuid4()
    with psycopg.connect(books) as conn:  # a rule the decoder does not know
        conn.execute(
            psycopg.sql.SQL(
                "ALTER TABLE token_usage_ledger ADD CONSTRAINT not_this_one CHECK (request_id <> {})"
            ).format(psycopg.sql.Literal(str(poison)))
        )
    good = [event(user) for _ in range(5)]
    bad = event(user, request_id=str(poison))
    sink = Sink()
    result = book(books, records(*good[:3], bad, *good[3:]), sink)
    assert result.outcomes == {"charged": 5, "rejected": 1}
    assert result.rejected == {"database_rejected": 1}
    [(topic, _, value, headers)] = sink.sent
    assert (topic, value) == ("dlq", bad)
    assert dict(headers)["dlq.reason"] == b"database_rejected"
    assert rows(books, "SELECT count(*) FROM token_usage_ledger") == [(5,)]
    booked = rows(books, "SELECT request_id FROM token_usage_ledger WHERE request_id = %s", poison)
    assert booked == []


def test_a_stopping_worker_gives_up_a_batch_it_cannot_commit(books: str) -> None:
    user = new_user(books, credits=10_000)
    with pytest.raises(BatchNotBooked):
        book(books, records(event(user), b"{not json"), Sink(failures=100), stopping=True)
    assert rows(books, "SELECT count(*) FROM token_usage_ledger") == [(0,)]
    assert rows(books, "SELECT count(*) FROM consumer_offsets") == [(0,)]
