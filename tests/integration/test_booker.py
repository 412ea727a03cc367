"""The booker's own paths, in-process against the session's PostgreSQL: a retriable
failure retries the whole transaction, a value the schema refuses is split down to the one
event and dead-lettered, and a worker told to stop gives up unacknowledged."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from pipeline.stream.booker import BatchNotBooked, BatchResult, Booker, BookingConfig
from pipeline.stream.dlq import SourceMessage
from tests.integration.pipeline_harness import make_event
from tests.integration.test_money import new_user, rows

pytestmark = pytest.mark.integration


@pytest.fixture
def books(seeded_db: str) -> str:
    return seeded_db


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
            sql.SQL(
                "ALTER TABLE token_usage_ledger ADD CONSTRAINT not_this_one CHECK (request_id <> {})"
            ).format(sql.Literal(str(poison)))
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


class Retries(logging.Handler):
    """Counts the booker's "not the events' fault" retries; `twice` is set at the second."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen = 0
        self.twice = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "not the events' fault" in record.getMessage():
            self.seen += 1
            if self.seen >= 2:
                self.twice.set()


async def _book_through_a_fault(
    url: str, messages: list[SourceMessage], sink: Sink, fix: Callable[[], None]
) -> BatchResult:
    """Book while the fault lasts: once the booker has retried twice, `fix` it."""
    config = BookingConfig(
        "dlq", "alerts", Decimal("0.001"), 0, timedelta(minutes=5), consumer_group="test",
        max_backoff_seconds=0.2,
    )  # fmt: skip
    retries = Retries()
    logger = logging.getLogger("pipeline.stream.booker")
    logger.addHandler(retries)
    try:
        async with AsyncConnectionPool(url, min_size=1, max_size=2, open=False) as pool:
            booker = Booker(pool, sink, config)
            [(events, decoded)] = list(booker.chunks(messages))
            task = asyncio.ensure_future(booker.book(events, decoded))
            # The booker's own retries are the condition; the deadline bounds the wait.
            done, _ = await asyncio.wait(
                [task, asyncio.ensure_future(retries.twice.wait())],
                timeout=30, return_when=asyncio.FIRST_COMPLETED,
            )  # fmt: skip
            assert task not in done, "booked (or failed) through the fault"
            assert retries.twice.is_set(), "no second retry within 30 s"
            await asyncio.to_thread(fix)
            return await asyncio.wait_for(task, 30)
    finally:
        logger.removeHandler(retries)


def _as_role(url: str, role: str) -> str:
    return psycopg.conninfo.make_conninfo(url, user=role)


@pytest.fixture
def writer(books: str, pg_admin_url: str) -> Iterator[str]:
    """A login in the worker's role `pipeline_writer` (superusers ignore privileges)."""
    role = f"writer_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN IN ROLE pipeline_writer").format(sql.Identifier(role))
        )
    try:
        yield role
    finally:
        with psycopg.connect(books, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


FAULTS = {
    # name: (break it, fix it), each run as the database owner
    "INSERT on the usage ledger revoked": (
        ["REVOKE INSERT ON token_usage_ledger FROM pipeline_writer"],
        ["GRANT INSERT ON token_usage_ledger TO pipeline_writer"],
    ),
    "a migration missing (a summary table)": (
        ["ALTER TABLE model_usage_daily_summary RENAME TO model_usage_daily_summary_away"],
        ["ALTER TABLE model_usage_daily_summary_away RENAME TO model_usage_daily_summary"],
    ),
    "a check no event can pass (every booked-up-to offset refused)": (
        ["ALTER TABLE consumer_offsets ADD CONSTRAINT refuse_all CHECK (next_offset < 0)"],
        ["ALTER TABLE consumer_offsets DROP CONSTRAINT refuse_all"],
    ),
    "the server read-only, then a failover": (
        ["ALTER ROLE {role} SET default_transaction_read_only = on"],
        [  # the sessions of the read-only server end; new ones are writable
            "ALTER ROLE {role} RESET default_transaction_read_only",
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'",
        ],
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_fault_of_ours_is_retried_and_blames_no_event(
    books: str, writer: str, fault: str
) -> None:
    user = new_user(books, credits=10_000)
    good = [event(user) for _ in range(4)]
    breaking, fixing = ([q.format(role=writer) for q in qs] for qs in FAULTS[fault])

    def run(queries: list[str]) -> None:
        with psycopg.connect(books, autocommit=True) as conn:
            for query in queries:
                conn.execute(query)

    run(breaking)

    sink = Sink()
    result = asyncio.run(
        _book_through_a_fault(
            _as_role(books, writer), records(*good, b"{bad"), sink, lambda: run(fixing)
        )
    )
    assert result.retries >= 2
    assert result.outcomes == {"charged": 4, "rejected": 1}
    assert [value for _, _, value, _ in sink.sent] == [b"{bad"]  # only the malformed record
    assert rows(books, "SELECT count(*) FROM token_usage_ledger") == [(4,)]
