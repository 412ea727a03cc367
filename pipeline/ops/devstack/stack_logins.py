"""The local stack's own logins on its embedded PostgreSQL: `usage_worker` in
pipeline_writer (``WORKER_DATABASE_URL``, which the worker runs as), `usage_finance` in
finance_reader (``FINANCE_DATABASE_URL``, for finance's SQL clients; nothing in the
pipeline reads it) and `usage_api` in api_reader (``API_DATABASE_URL``, which
`usage-pipeline api` runs as).

`dev up` applies the migrations first (the group roles come from migration 009), then
makes the logins, or updates them to their passwords: generated at the first `up`, kept in
``logins.json`` (mode 0600). `down` keeps that file as it keeps the data directory whose
password verifiers it matches, so a worker configured once still logs in after `down` and
`up`; an `up` also restores a password that was changed meanwhile.

A server that ``DATABASE_URL`` names is never touched here: its logins are its owner's
to make, with `usage-pipeline db grant-login`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import psycopg

from pipeline.errors import first_line
from pipeline.ops.devstack.stack_errors import StackError
from pipeline.ops.devstack.state import StackPaths, write_atomically
from pipeline.schema import logins, migrations

ROLES = {
    logins.WORKER_LOGIN: "pipeline_writer",
    logins.FINANCE_LOGIN: "finance_reader",
    logins.API_LOGIN: "api_reader",
}
"""Each login of the stack and the one group role it is a member of."""


@dataclass(frozen=True)
class StackLogins:
    """The conninfo of each of the stack's logins; each holds its password."""

    worker_database_url: str
    finance_database_url: str
    api_database_url: str


def parse_passwords(text: str) -> dict[str, str]:
    """The passwords of a ``logins.json`` text; unknown or malformed entries are left out."""
    try:
        raw = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(raw, dict):
        return {}
    return {n: p for n, p in raw.items() if n in ROLES and isinstance(p, str) and p}


def render_passwords(passwords: Mapping[str, str]) -> str:
    return json.dumps(dict(passwords), indent=2, sort_keys=True) + "\n"


def login_urls(owner_url: str, passwords: Mapping[str, str]) -> StackLogins:
    """The logins' conninfos on the owner's server, given every login's password."""

    def url(name: str) -> str:
        return logins.login_conninfo(owner_url, name, passwords[name])

    return StackLogins(url(logins.WORKER_LOGIN), url(logins.FINANCE_LOGIN), url(logins.API_LOGIN))


def read_passwords(paths: StackPaths) -> dict[str, str]:
    try:
        return parse_passwords(paths.login_passwords.read_text())
    except FileNotFoundError:
        return {}


def known(paths: StackPaths, owner_url: str) -> StackLogins | None:
    """The logins an earlier `up` made on this stack's server, if it made them."""
    passwords = read_passwords(paths)
    return login_urls(owner_url, passwords) if set(passwords) == set(ROLES) else None


def make(paths: StackPaths, owner_url: str, progress: Callable[[str], None]) -> StackLogins:
    """Migrate the stack's database, then make or update the logins (as the superuser).

    The passwords are recorded only once all the logins have them: an `up` that fails before
    makes them again with new ones.
    """
    stored = read_passwords(paths)
    passwords = {name: stored.get(name) or logins.new_password() for name in ROLES}
    try:
        with psycopg.connect(owner_url, autocommit=True) as conn:
            applied = migrations.migrate(conn)
            if applied:
                progress(f"postgres: applied {len(applied)} migrations")
            for name, role in ROLES.items():
                logins.grant_login(conn, name, role, passwords[name])
    except psycopg.Error as exc:
        raise StackError(f"PostgreSQL refused the stack's logins: {first_line(exc)}") from None
    if passwords != stored:
        write_atomically(paths.login_passwords, render_passwords(passwords), private=True)
    progress(f"postgres: logins {', '.join(f'{n} ({r})' for n, r in ROLES.items())}")
    return login_urls(owner_url, passwords)
