"""Login roles for the group roles of migrations 009 and 013: the worker's
(`pipeline_writer`), finance's (`finance_reader`) and the gateway API's (`api_reader`). A
login is a member of exactly one of them, so the ledgers' immutability (INSERT, never
UPDATE or DELETE) holds for whoever runs the worker.

The password reaches the server only as a SCRAM-SHA-256 verifier, never in clear (so no
statement log can show it). Creating a role needs CREATEROLE, which the owner of a
managed PostgreSQL (RDS, Cloud SQL, Azure) has without being a superuser; from
PostgreSQL 16 on, such an owner also needs ADMIN OPTION on the group role it grants,
which it holds on the roles it created itself (the migrations run as that owner). So
nothing here names an attribute a non-superuser may not touch: an existing login is
altered only in what it must lose, and only memberships it has are revoked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Any

import psycopg
import psycopg.errors
from psycopg import sql

from pipeline.errors import PipelineError, first_line

GROUP_ROLES = ("pipeline_writer", "finance_reader", "api_reader")
SCRAM_ITERATIONS = 4096  # PostgreSQL's default (scram_iterations)


class LoginRefused(PipelineError):
    """The login cannot be made: a bad name, a role that is not ours, a group role missing."""


def new_password() -> str:
    """A random password of 32 URL-safe characters (192 bits)."""
    return secrets.token_urlsafe(24)


def scram_verifier(password: str, salt: bytes, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802, 7677)."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    server = hmac.digest(salted, b"Server Key", "sha256")
    b64 = [base64.b64encode(x).decode() for x in (salt, stored, server)]
    return f"SCRAM-SHA-256${iterations}:{b64[0]}${b64[1]}:{b64[2]}"


WORKER_LOGIN = "usage_worker"
"""The worker's login where the product makes it itself (the dev stack, the demo, the
chaos drill)."""

FINANCE_LOGIN = "usage_finance"
"""Finance's login where the product makes it itself (the dev stack)."""

API_LOGIN = "usage_api"
"""The gateway API's login where the product makes it itself (the dev stack, `bench api`)."""


def login_conninfo(owner_url: str, name: str, password: str) -> str:
    """The conninfo of login `name`: the owner's, with the login's user and password."""
    return psycopg.conninfo.make_conninfo(owner_url, user=name, password=password)


def worker_login_url(conn: psycopg.Connection[Any], owner_url: str) -> str:
    """Make WORKER_LOGIN (or give it a new password) and return its conninfo."""
    return login_url(conn, owner_url, WORKER_LOGIN, "pipeline_writer")


def login_url(conn: psycopg.Connection[Any], owner_url: str, name: str, role: str) -> str:
    """Make login `name` in `role` (or give it a new password) and return its conninfo."""
    password = new_password()
    grant_login(conn, name, role, password)
    return login_conninfo(owner_url, name, password)


def grant_login(conn: psycopg.Connection[Any], name: str, role: str, password: str) -> bool:
    """Make `name` a LOGIN role with `password`, a member of `role` and of no other group
    role; returns whether it was created (False: an existing login was updated)."""
    if role not in GROUP_ROLES:
        raise LoginRefused(f"--role must be one of {', '.join(GROUP_ROLES)}, not {role!r}")
    if name in GROUP_ROLES or not name.isidentifier() or name.startswith("pg_"):
        raise LoginRefused(f"{name!r} is not a login name we make (letters, digits, _)")
    ident = sql.Identifier(name)
    with conn.transaction():
        if conn.execute("SELECT FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
            raise LoginRefused(f"role {role} does not exist: run `usage-pipeline db migrate`")
        found = conn.execute(_ATTRIBUTES, (name,))
        existing = found.fetchone()
        if existing is not None and existing[0]:
            raise LoginRefused(f"{name} is a superuser: no privilege would bind it")
        verifier = sql.Literal(scram_verifier(password, secrets.token_bytes(16)))
        if existing is None:
            statement = sql.SQL(
                "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}"
            ).format(ident, verifier)
        else:
            # Naming an attribute, even to clear it, needs holding it (PostgreSQL 16+).
            lost = [clause for clause, held in zip(_CLEARED, existing[1:], strict=True) if held]
            statement = sql.SQL("ALTER ROLE {} LOGIN {} PASSWORD {}").format(
                ident, sql.SQL(" ").join(lost), verifier
            )
        try:
            conn.execute(statement)
            held = _group_roles_of(conn, name)
            for other in sorted(held - {role}):
                conn.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(other), ident))
            if role not in held:
                conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), ident))
        except psycopg.errors.InsufficientPrivilege as exc:
            me, groups = conn.info.user, ", ".join(GROUP_ROLES)
            raise LoginRefused(
                f"cannot make login {name} in {role}: {_with_detail(exc)}; {me} needs "
                f"CREATEROLE and ADMIN OPTION on {groups}, which it has on roles it created "
                f"(else their creator runs GRANT {groups} TO {me} WITH ADMIN OPTION)"
            ) from None
        kept = _group_roles_of(conn, name)
        if kept != {role}:
            # A non-superuser's REVOKE leaves grants another role made (a warning only).
            others = ", ".join(sorted(kept - {role}))
            raise LoginRefused(
                f"{name} stays in {others}: another role granted it, and must revoke it"
            )
    return existing is None


_ATTRIBUTES = """
    SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls
    FROM pg_roles WHERE rolname = %s
"""
_CLEARED = tuple(
    sql.SQL(clause) for clause in ("NOCREATEDB", "NOCREATEROLE", "NOREPLICATION", "NOBYPASSRLS")
)
"""What an existing login loses, in the order of `_ATTRIBUTES` after rolsuper."""


def _group_roles_of(conn: psycopg.Connection[Any], name: str) -> set[str]:
    """The group roles (of GROUP_ROLES) `name` is a direct member of."""
    rows = conn.execute(
        """
        SELECT g.rolname FROM pg_auth_members m
        JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member
        WHERE u.rolname = %s AND g.rolname = ANY(%s)
        """,
        (name, list(GROUP_ROLES)),
    ).fetchall()
    return {row[0] for row in rows}


def _with_detail(exc: psycopg.Error) -> str:
    """The server's message and its detail, on one line (the detail says which privilege)."""
    parts = (exc.diag.message_primary, exc.diag.message_detail)
    return ": ".join(part.strip().rstrip(".") for part in parts if part) or first_line(exc)
