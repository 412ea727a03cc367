"""Least-privilege logins (issue 11): `db grant-login` makes them, the worker runs as one,
and the ledgers' immutability binds it."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

from pipeline.cli import main
from tests.integration.pipeline_harness import Harness, make_event
from tests.integration.test_pipeline import new_user

pytestmark = pytest.mark.integration


@pytest.fixture
def login(pg_admin_url: str) -> Iterator[str]:
    """A fresh login name; the role is dropped afterwards in every database it touched."""
    name = f"login_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        if conn.execute("SELECT FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def grant(db: str, name: str, role: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        main, ["db", "grant-login", name, "--role", role], env={"DATABASE_URL": db}
    )
    return result.exit_code, result.stdout, result.stderr


def as_login(db: str, name: str) -> str:
    return psycopg.conninfo.make_conninfo(db, user=name)


def refused(url: str, statement: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            conn.execute(statement)
        except psycopg.errors.InsufficientPrivilege:
            return True
    return False


def groups(db: str, name: str) -> list[str]:
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            """
            SELECT g.rolname FROM pg_auth_members m
            JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member
            WHERE u.rolname = %s ORDER BY 1
            """,
            (name,),
        ).fetchall()
    return [r[0] for r in rows]


def test_grant_login_makes_a_writer_that_cannot_rewrite_the_ledgers(
    new_books: Callable[[], str], login: str
) -> None:
    db = new_books()
    code, out, err = grant(db, login, "pipeline_writer")
    assert code == 0 and err.strip() == f"created login {login} in pipeline_writer"
    [password] = out.split()
    assert len(password) == 32
    with psycopg.connect(db) as conn:
        [(stored,)] = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (login,)
        ).fetchall()
    assert stored.startswith("SCRAM-SHA-256$4096:") and password not in stored
    assert groups(db, login) == ["pipeline_writer"]

    url = as_login(db, login)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (login,)
        assert conn.execute("SELECT count(*) FROM token_usage_ledger").fetchone() == (0,)
    assert refused(url, "UPDATE token_usage_ledger SET vendor_cost = 0")
    assert refused(url, "DELETE FROM credit_deduction_ledger")
    assert refused(url, "UPDATE credit_deduction_ledger SET amount = 0")
    assert refused(url, "CREATE TABLE mine (x int)")
    assert refused(url, "INSERT INTO model_provider_pricing (provider_id) VALUES (NULL)")


def test_a_login_moves_to_finance_which_reads_and_cannot_write(
    new_books: Callable[[], str], login: str
) -> None:
    db = new_books()
    assert grant(db, login, "pipeline_writer")[0] == 0
    code, _, err = grant(db, login, "finance_reader")
    assert code == 0 and err.strip() == f"updated login {login} in finance_reader"
    assert groups(db, login) == ["finance_reader"]
    url = as_login(db, login)
    report = CliRunner().invoke(
        main, ["report", "daily", "--from", "2026-01-01", "--to", "2026-01-02"],
        env={"DATABASE_URL": url},
    )  # fmt: skip
    assert report.exit_code == 0, report.output
    assert refused(url, "INSERT INTO token_usage_ledger (request_id) VALUES (gen_random_uuid())")
    assert refused(url, "UPDATE user_credit_balance SET amount = 0")


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["db", "grant-login", "x", "--role", "postgres"], "Invalid value for '--role'"),
        (["db", "grant-login", "pipeline_writer", "--role", "finance_reader"], "not a login name"),
        (["db", "grant-login", "postgres", "--role", "pipeline_writer"], "is a superuser"),
    ],
)
def test_grant_login_refuses_in_one_line(
    new_books: Callable[[], str], args: list[str], why: str
) -> None:
    result = CliRunner().invoke(main, args, env={"DATABASE_URL": new_books()})
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code != 0 and len(errors) == 1 and why in errors[0], result.output
    assert "Traceback" not in result.output


def test_the_worker_runs_as_its_login(
    new_books: Callable[[], str], kafka_bootstrap: str, login: str, tmp_path: Path
) -> None:
    db = new_books()
    assert grant(db, login, "pipeline_writer")[0] == 0
    h = Harness(
        db, kafka_bootstrap,
        env_overrides={"WORKER_DATABASE_URL": as_login(db, login), "EXPIRY_INTERVAL_SECONDS": "1"},
    )  # fmt: skip
    user = new_user(h, credits=100_000)
    events = [make_event(user) for _ in range(20)]
    h.publish(events)
    h.start_worker(tmp_path)
    try:
        h.wait_booked([e["request_id"] for e in events])
        assert h.worker_sessions() == [(login, False)]
    finally:
        h.stop_worker()
    log = h.log_path.read_text() if h.log_path else ""
    assert "permission denied" not in log, log[-2000:]
