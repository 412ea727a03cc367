"""API keys: bearer tokens shown once, stored as a SHA-256 and a visible prefix.

A token is ``upk_`` and 43 random URL-safe characters (256 bits). Its first `PREFIX_LENGTH`
characters are stored in clear to find the key and to tell keys apart in `api-keys list`;
the rest is only ever compared as a digest, in constant time. Tokens are high-entropy, so
a plain SHA-256 suffices (no password hashing needed) and a stolen table yields no token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

import psycopg

from pipeline.errors import PipelineError

TOKEN_PREFIX = "upk_"
PREFIX_LENGTH = 12
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class Scope(StrEnum):
    INGEST = "ingest"
    """POST /v1/events."""
    READ = "read"
    """Balances, entitlements and usage."""
    ADMIN = "admin"
    """Everything."""


def allows(granted: Scope, needed: Scope) -> bool:
    return granted is Scope.ADMIN or granted is needed


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    prefix: str
    scope: Scope
    users: frozenset[UUID] | None
    """None: every user."""
    created_at: datetime
    revoked_at: datetime | None = None

    def may_see(self, user: UUID) -> bool:
        return self.users is None or user in self.users


class KeyRefused(PipelineError):
    """A key that cannot be made or changed (a bad or taken name, an unknown key)."""


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def matches(token: str, stored: bytes) -> bool:
    """Whether `token` is the one `stored` was made from, in constant time."""
    return hmac.compare_digest(digest(token), stored)


def prefix_of(token: str) -> str | None:
    """The visible prefix of a well-formed token, else None."""
    if not token.startswith(TOKEN_PREFIX) or len(token) < PREFIX_LENGTH + 16:
        return None
    return token[:PREFIX_LENGTH]


_COLUMNS = "name, prefix, scope, user_ids, created_at, revoked_at"
FIND_SQL = f"SELECT {_COLUMNS}, token_sha256 FROM api_keys WHERE prefix = %s AND revoked_at IS NULL"


def from_row(row: Sequence[Any]) -> ApiKey:
    name, prefix, scope, users, created, revoked = row[:6]
    return ApiKey(name, prefix, Scope(scope), frozenset(users) if users else None, created,
                  revoked)  # fmt: skip


def create(
    conn: psycopg.Connection[Any], name: str, scope: Scope, users: Sequence[UUID] = ()
) -> tuple[ApiKey, str]:
    """Make key `name`; returns it and its token, which is shown once and kept nowhere."""
    if not _NAME.fullmatch(name):
        raise KeyRefused(f"key name {name!r}: 1 to 64 of A-Z a-z 0-9 _ . -")
    token = new_token()
    try:
        with conn.transaction():
            row = conn.execute(
                f"INSERT INTO api_keys (name, prefix, token_sha256, scope, user_ids) "
                f"VALUES (%s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
                (name, token[:PREFIX_LENGTH], digest(token), scope.value, list(users) or None),
            ).fetchone()
    except psycopg.errors.UniqueViolation:
        raise KeyRefused(f"a key named {name!r} exists: revoke it or pick another name") from None
    assert row is not None
    return from_row(row), token


def listed(conn: psycopg.Connection[Any]) -> list[ApiKey]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, name").fetchall()
    return [from_row(row) for row in rows]


def revoke(conn: psycopg.Connection[Any], name: str) -> ApiKey:
    """Revoke key `name` (at once in the database; an API process notices within
    `pipeline.api.auth.KEY_CACHE_SECONDS`)."""
    with conn.transaction():
        row = conn.execute(
            f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE name = %s "
            f"RETURNING {_COLUMNS}",
            (name,),
        ).fetchone()
    if row is None:
        raise KeyRefused(f"no key named {name!r}")
    return from_row(row)
