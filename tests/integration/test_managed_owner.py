"""The schema and the logins as a managed PostgreSQL (RDS, Cloud SQL, Azure) has them: the
database's owner has CREATEROLE but is no superuser. From PostgreSQL 16 on, such an owner
may grant only roles it holds ADMIN OPTION on, which it has on the roles it created."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

from pipeline.cli import main
from pipeline.money.credits import Grant, grant
from pipeline.schema.logins import GROUP_ROLES
from pipeline.schema.migrations import load_migrations
from pipeline.schema.seed import ADMIN_USER_ID

pytestmark = pytest.mark.integration

OWNER_PASSWORD = "owner-password-for-this-test"


@dataclass(frozen=True)
class Owner:
    name: str
    url: str
    """Conninfo of its own database, as it (with its password)."""


def make_owner(admin_url: str, name: str) -> Owner:
    """As the superuser: `name` LOGIN CREATEROLE NOSUPERUSER, and a fresh database it owns."""
    database = f"managed_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEROLE NOSUPERUSER PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(OWNER_PASSWORD)
            )
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(database), sql.Identifier(name)
            )
        )
    url = psycopg.conninfo.make_conninfo(
        admin_url, user=name, password=OWNER_PASSWORD, dbname=database
    )
    return Owner(name, url)


def drop_owner(admin_url: str, owner: Owner, logins: list[str]) -> None:
    database = psycopg.conninfo.conninfo_to_dict(owner.url)["dbname"]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )
        for role in [*logins, owner.name]:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def run(owner: Owner, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env={"DATABASE_URL": owner.url}, input=stdin)
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.stdout, result.stderr


def admin_options(url: str, member: str) -> dict[str, bool]:
    """The group roles `member` belongs to, with whether it holds ADMIN OPTION on each."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """
            SELECT g.rolname, m.admin_option FROM pg_auth_members m
            JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member
            WHERE u.rolname = %s AND g.rolname = ANY(%s)
            """,
            (member, list(GROUP_ROLES)),
        ).fetchall()
    return dict(rows)


def assert_writer_books_and_cannot_rewrite(owner: Owner, login: str, password: str) -> None:
    """As `login`: the product's grant path books (INSERT ledger row, UPDATE balance), and
    the ledger row cannot be changed or deleted afterwards."""
    url = psycopg.conninfo.make_conninfo(owner.url, user=login, password=password)
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (login,)
        booked = grant(conn, Grant(ADMIN_USER_ID, 250, "bonus"))
        assert (booked.applied, booked.balance_after - booked.balance_before) == (True, 250)
        for statement in (
            "UPDATE credit_deduction_ledger SET amount = 0",
            "DELETE FROM credit_deduction_ledger",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    with psycopg.connect(owner.url) as conn:
        rows = conn.execute(
            "SELECT amount FROM credit_deduction_ledger WHERE user_id = %s", (ADMIN_USER_ID,)
        ).fetchall()
    assert rows == [(250,)]


def test_an_owner_that_is_no_superuser_migrates_rolls_back_and_makes_logins(
    own_postgres: str,
) -> None:
    """On a server of its own, where no group role exists yet (a new managed instance; the
    session's server has them, made by its superuser)."""
    owner = make_owner(own_postgres, "managed_owner")
    login = "managed_worker"
    try:
        code, out, err = run(owner, "db", "migrate")
        assert code == 0, err
        assert out.count("applied ") == len(load_migrations())
        # The group roles are the owner's own, so it may grant them (PostgreSQL 16+).
        assert admin_options(own_postgres, owner.name) == dict.fromkeys(GROUP_ROLES, True)
        code, out, err = run(owner, "db", "rollback", "--steps", str(len(load_migrations())))
        assert code == 0, err
        assert admin_options(own_postgres, owner.name) == {}, "009's down drops its roles"
        assert run(owner, "db", "migrate")[0] == 0
        code, out, err = run(owner, "db", "seed")
        assert code == 0 and out.startswith("seeded "), err

        code, out, err = run(owner, "db", "grant-login", login, "--role", "pipeline_writer")
        assert code == 0 and err.strip() == f"created login {login} in pipeline_writer", err
        # Again, now an update: ALTER ROLE may not even name SUPERUSER or CREATEDB here.
        code, _, err = run(
            owner, "db", "grant-login", login, "--role", "pipeline_writer", "--password-stdin",
            stdin="the-writers-password\n",
        )  # fmt: skip
        assert code == 0 and err.strip() == f"updated login {login} in pipeline_writer", err
        assert admin_options(own_postgres, login) == {"pipeline_writer": False}
        assert_writer_books_and_cannot_rewrite(owner, login, "the-writers-password")
    finally:
        drop_owner(own_postgres, owner, [login])


def test_an_owner_beside_group_roles_another_role_made_is_told_what_to_grant(
    pg_admin_url: str, migrated_db: str
) -> None:
    """The session's group roles were made by its superuser (migrating the template of
    `migrated_db`): the owner migrates its database, but may grant the roles only once it
    holds ADMIN OPTION on them."""
    tag = uuid.uuid4().hex[:10]
    owner = make_owner(pg_admin_url, f"managed_owner_{tag}")
    login = f"managed_worker_{tag}"
    try:
        assert run(owner, "db", "migrate")[0] == 0
        assert admin_options(pg_admin_url, owner.name) == {}, "the roles are not the owner's"
        # Its rollback leaves the roles to the superuser who made them, and succeeds.
        code, _, err = run(owner, "db", "rollback", "--steps", str(len(load_migrations())))
        assert code == 0, err
        with psycopg.connect(pg_admin_url) as conn:
            kept = conn.execute(
                "SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s)", (list(GROUP_ROLES),)
            ).fetchone()
        assert kept == (len(GROUP_ROLES),)
        assert run(owner, "db", "migrate")[0] == 0
        assert run(owner, "db", "seed")[0] == 0

        code, out, err = run(owner, "db", "grant-login", login, "--role", "pipeline_writer")
        errors = [line for line in err.splitlines() if line.startswith("Error:")]
        assert code == 1 and len(errors) == 1 and out == "", err
        assert "ADMIN option" in errors[0]
        fix = f"GRANT {', '.join(GROUP_ROLES)} TO {owner.name} WITH ADMIN OPTION"
        assert fix in errors[0]
        with psycopg.connect(pg_admin_url) as conn:
            made = conn.execute("SELECT FROM pg_roles WHERE rolname = %s", (login,)).fetchone()
        assert made is None, "a refused grant-login leaves no half-made login"

        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("GRANT {} TO {} WITH ADMIN OPTION").format(
                    sql.SQL(", ").join(map(sql.Identifier, GROUP_ROLES)),
                    sql.Identifier(owner.name),
                )
            )
        code, out, err = run(owner, "db", "grant-login", login, "--role", "pipeline_writer")
        assert code == 0, err
        assert_writer_books_and_cannot_rewrite(owner, login, out.strip())
    finally:
        drop_owner(pg_admin_url, owner, [login])
