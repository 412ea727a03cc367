"""Database faults that are not the events' fault, through a real worker (issue 11, item 4).

Each test runs `python -m pipeline worker` as a login of its own in `pipeline_writer`
(WORKER_DATABASE_URL), publishes valid events through Kafka, breaks the database as its
owner, and waits until the worker's log shows it retrying that fault (by SQLSTATE). Only
then does it check that the events it published meanwhile are neither booked, nor
dead-lettered, nor acknowledged to Kafka, and that the retries back off. It then fixes the
fault and checks that every event is booked exactly once, acknowledged, and that the
dead-letter topic is empty. The booker retries such faults for as long as they last
(`pipeline.books.faults`), so the worker must also still be running; one stopped while
the fault lasts exits 70 unacknowledged.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.abc import Query

from pipeline.schema import migrations
from pipeline.schema.logins import login_url
from pipeline.schema.migrations import MigrationState
from pipeline.stream.usage_agent import EXIT_BATCH_NOT_BOOKED
from tests.integration.pipeline_harness import Harness, make_event, wait_for
from tests.integration.test_pipeline import new_user

pytestmark = pytest.mark.integration

RETRIES_SEEN = 5
"""Retries of the fault to wait for before judging what the worker did meanwhile: with
the booker's backoff they span seconds, a few of Faust's commit intervals (1 s), so an
acknowledgement of the held take would have been committed by then."""
REFERENCE_VERSION_MIGRATION = 12


@pytest.fixture
def books(new_books: Callable[[], str]) -> str:
    return new_books()


@pytest.fixture
def login(books: str, pg_admin_url: str) -> Iterator[tuple[str, str]]:
    """(name, conninfo) of a fresh login in `pipeline_writer`, made the product's way.

    Not the product's fixed `usage_worker`: roles are the server's, and a test that changes
    its login's settings must change nobody else's.
    """
    name = f"worker_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(books, autocommit=True) as conn:
        url = login_url(conn, books, name, "pipeline_writer")
    yield name, url
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.fixture
def harness(books: str, login: tuple[str, str], kafka_bootstrap: str) -> Iterator[Harness]:
    h = Harness(books, kafka_bootstrap, env_overrides={"WORKER_DATABASE_URL": login[1]})
    yield h
    h.stop_worker()


def as_owner(h: Harness, *statements: Query) -> None:
    with psycopg.connect(h.database_url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def request_ids(events: list[dict[str, Any]]) -> list[str]:
    return [e["request_id"] for e in events]


def wait_acknowledged(h: Harness) -> dict[int, int]:
    """The group's committed offsets once they reach the end of every usage partition."""

    def all_acknowledged() -> dict[int, int] | None:
        acked = h.acknowledged()
        return acked if h.alive() and acked and acked == h.published() else None

    return wait_for(all_acknowledged, 30, "the worker group to acknowledge every record")


def book_a_first_batch(
    h: Harness, tmp_path: Path
) -> tuple[Any, list[dict[str, Any]], dict[int, int]]:
    """A user, ten events booked for them by a started worker, and the offsets acknowledged."""
    user = new_user(h, credits=1_000_000)
    first = [make_event(user) for _ in range(10)]
    h.publish(first)
    h.start_worker(tmp_path)
    h.wait_booked(request_ids(first))
    return user, first, wait_acknowledged(h)


def assert_held(
    h: Harness, since: int, sqlstate: str, held: list[dict[str, Any]], acked: dict[int, int]
) -> None:
    """Once the worker has logged `RETRIES_SEEN` retries of `sqlstate` after byte `since`
    of its log (earlier ones may be of another: a connection cut, say): `held` is neither
    booked, dead-lettered nor acknowledged past `acked`, and one batch was retried with a
    growing delay (one attempt count, not a loop without backoff). The wait ends sooner
    if the worker books, dead-letters or acknowledges meanwhile, for the asserts to say."""

    def settled() -> bool:
        seen = sum(r.sqlstate == sqlstate for r in h.retries_since(since))
        return h.alive() and (
            seen >= RETRIES_SEEN
            or h.booked(request_ids(held)) > 0
            or dead_lettering(h, since)
            or h.acknowledged() != acked
        )

    wait_for(settled, 30, f"{RETRIES_SEEN} retries of SQLSTATE {sqlstate} in {h.log_path}")
    assert h.booked(request_ids(held)) == 0
    assert h.dead_letters() == []
    assert h.acknowledged() == acked
    retries = h.retries_since(since)
    [size] = {r.events for r in retries}  # one batch (a take may hold only part of `held`)
    assert size <= len(held), retries
    attempts = [r.attempt for r in retries]
    assert attempts == list(range(1, len(attempts) + 1)), retries
    delays = [r.delay for r in retries]
    assert delays == sorted(delays) and delays[-1] > delays[0], retries
    assert h.alive()


def dead_lettering(h: Harness, since: int) -> bool:
    """Whether the worker logged a dead-lettered event after byte `since` of its log."""
    assert h.log_path is not None
    with h.log_path.open("rb") as log:
        log.seek(since)
        return b"event dead-lettered" in log.read()


def assert_booked_once(h: Harness, events: list[dict[str, Any]]) -> None:
    ids = request_ids(events)
    usage = h.query(
        "SELECT count(*), count(DISTINCT request_id) FROM token_usage_ledger "
        "WHERE request_id::text = ANY(%s)",
        ids,
    )
    deductions = h.query(
        "SELECT count(*), count(DISTINCT request_id) FROM credit_deduction_ledger "
        "WHERE request_id::text = ANY(%s)",
        ids,
    )
    assert usage == deductions == [(len(ids), len(ids))]
    assert h.dead_letters() == []


def test_a_revoked_insert_holds_the_events_until_it_is_granted_again(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    user, first, acked = book_a_first_batch(h, tmp_path)

    since = h.log_size()
    as_owner(h, "REVOKE INSERT ON token_usage_ledger FROM pipeline_writer")
    held = [make_event(user) for _ in range(10)]
    h.publish(held)
    assert_held(h, since, errors.InsufficientPrivilege.sqlstate, held, acked)

    as_owner(h, "GRANT INSERT ON token_usage_ledger TO pipeline_writer")
    h.wait_booked(request_ids(first + held), timeout=30)
    wait_acknowledged(h)
    assert_booked_once(h, first + held)


def test_a_missing_migration_holds_the_events_until_it_is_applied(
    harness: Harness, tmp_path: Path
) -> None:
    """The worker's database lacks migration 012 (and any after it), undone by its down
    file the way `db rollback` does: every batch transaction reads its `reference_version`
    first. Stopped meanwhile, the worker exits 70 with nothing acknowledged; after `db
    migrate` a new worker books every event.

    The new worker joins a consumer group of its own, which starts where the first one's
    committed offsets (none) would: in the first one's group it would wait out the exited
    member's Kafka session, Faust's 60 s, since the worker no longer lets Faust read
    BROKER_SESSION_TIMEOUT from its environment.
    """
    h = harness
    with psycopg.connect(h.database_url, autocommit=True) as conn:
        later = [
            m for m in migrations.status(conn)
            if m.version >= REFERENCE_VERSION_MIGRATION and m.state == MigrationState.APPLIED
        ]  # fmt: skip
        undone = migrations.rollback(conn, steps=len(later))
    assert undone[-1].startswith(f"{REFERENCE_VERSION_MIGRATION:03d}_"), undone
    user = new_user(h, credits=1_000_000)
    events = [make_event(user) for _ in range(10)]
    h.publish(events)
    h.start_worker(tmp_path)
    assert_held(h, 0, errors.UndefinedTable.sqlstate, events, {})
    assert h.stop_worker() == EXIT_BATCH_NOT_BOOKED
    assert h.booked(request_ids(events)) == 0
    assert h.acknowledged() == {}

    with psycopg.connect(h.database_url, autocommit=True) as conn:
        assert migrations.migrate(conn) == undone[::-1]
    h.env_overrides["WORKER_ID"] = f"{h.worker_id}-after-migrate"
    h.start_worker(tmp_path)
    h.wait_booked(request_ids(events), timeout=30)
    wait_acknowledged(h)
    assert_booked_once(h, events)


def test_a_server_turned_read_only_holds_the_events_until_it_is_writable(
    harness: Harness, login: tuple[str, str], tmp_path: Path
) -> None:
    """Read-only as a failover to a standby looks to the worker: its live sessions end,
    and the ones it opens again refuse every write (SQLSTATE 25006).

    Made so with `ALTER ROLE <the worker's login> SET default_transaction_read_only = on`,
    then `pg_terminate_backend` of the login's sessions so the pool reconnects read-only;
    undone the same way. The login is this test's alone, so nothing else is touched. The
    alternatives miss: `ALTER DATABASE ... SET` reaches new sessions only (the pool's
    connections are long-lived, so it needs the same termination) and binds the test's
    own owner connections too; `ALTER SYSTEM` + `pg_reload_conf()` turns running sessions
    read-only without ending them, but for the whole server, which the session's other
    tests share (the chaos drill, on a server of its own, uses it).
    """
    h = harness
    role = sql.Identifier(login[0])
    end_its_sessions = sql.SQL(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE usename = {} AND datname = current_database()"
    ).format(sql.Literal(login[0]))
    user, first, acked = book_a_first_batch(h, tmp_path)

    since = h.log_size()
    read_only = sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(role)
    as_owner(h, read_only, end_its_sessions)
    held = [make_event(user) for _ in range(10)]
    h.publish(held)
    assert_held(h, since, errors.ReadOnlySqlTransaction.sqlstate, held, acked)

    writable = sql.SQL("ALTER ROLE {} RESET default_transaction_read_only").format(role)
    as_owner(h, writable, end_its_sessions)
    h.wait_booked(request_ids(first + held), timeout=30)
    wait_acknowledged(h)
    assert_booked_once(h, first + held)
