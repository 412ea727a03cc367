"""Login roles for the two group roles of migration 009: the worker's (`pipeline_writer`)
and finance's (`finance_reader`). A login is a member of exactly one of them, so the
ledgers' immutability (INSERT, never UPDATE or DELETE) holds for whoever runs the worker.

The password reaches the server only as a SCRAM-SHA-256 verifier, never in clear (so no
statement log can show it). Creating a role needs CREATEROLE, which the owner of a
managed PostgreSQL (RDS, Cloud SQL, Azure) has without being a superuser.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Any

import psycopg
from psycopg import sql

from pipeline.errors import PipelineError

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
"""The worker's login where the product makes it itself (the demo, the chaos drill)."""


def worker_login_url(conn: psycopg.Connection[Any], owner_url: str) -> str:
    """Make WORKER_LOGIN (or give it a new password) and return its conninfo: the owner's
    with the login's user and password."""
    password = new_password()
    grant_login(conn, WORKER_LOGIN, "pipeline_writer", password)
    return psycopg.conninfo.make_conninfo(owner_url, user=WORKER_LOGIN, password=password)


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
        found = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (name,))
        existing = found.fetchone()
        if existing is not None and existing[0]:
            raise LoginRefused(f"{name} is a superuser: no privilege would bind it")
        verifier = sql.Literal(scram_verifier(password, secrets.token_bytes(16)))
        statement = "ALTER" if existing is not None else "CREATE"
        conn.execute(
            sql.SQL(statement + " ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}")
            .format(ident, verifier)
        )  # fmt: skip
        for other in GROUP_ROLES:
            if other != role:
                conn.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(other), ident))
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), ident))
    return existing is None
