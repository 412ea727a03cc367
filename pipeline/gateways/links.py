"""`gateway_user_links`: which of our users a gateway's own user id bills (migration 014).

Written by the database owner (`usage-pipeline gateway-users`); the worker only reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg

from pipeline.core.events import GatewayUser
from pipeline.errors import PipelineError


class LinkError(PipelineError):
    """A link that cannot be made or removed."""


@dataclass(frozen=True, slots=True)
class Link:
    gateway: str
    external_id: str
    user_id: UUID
    created_at: datetime


def link(conn: psycopg.Connection[Any], named: GatewayUser, user: UUID) -> Link:
    """Link the gateway's user to `user`; refused if it is linked to another user (who
    has been billed for its events so far: unlink it first, on purpose)."""
    with conn.transaction():
        if conn.execute("SELECT 1 FROM users WHERE id = %s", (user,)).fetchone() is None:
            raise LinkError(f"no user {user}")
        conn.execute(
            """
            INSERT INTO gateway_user_links (gateway, external_id, user_id)
            VALUES (%s, %s, %s) ON CONFLICT (gateway, external_id) DO NOTHING
            """,
            (named.gateway, named.id, user),
        )
        found = _find(conn, named)
    assert found is not None
    if found.user_id != user:
        raise LinkError(
            f"{named.gateway} user {named.id!r} is linked to user {found.user_id}; unlink it first"
        )
    return found


def unlink(conn: psycopg.Connection[Any], named: GatewayUser) -> Link:
    with conn.transaction():
        row = conn.execute(
            """
            DELETE FROM gateway_user_links WHERE gateway = %s AND external_id = %s
            RETURNING gateway, external_id, user_id, created_at
            """,
            (named.gateway, named.id),
        ).fetchone()
    if row is None:
        raise LinkError(f"{named.gateway} user {named.id!r} is not linked")
    return Link(*row)


def listed(conn: psycopg.Connection[Any], gateway: str | None = None) -> list[Link]:
    rows = conn.execute(
        """
        SELECT gateway, external_id, user_id, created_at FROM gateway_user_links
        WHERE %(gateway)s::text IS NULL OR gateway = %(gateway)s
        ORDER BY gateway, external_id
        """,
        {"gateway": gateway},
    ).fetchall()
    return [Link(*r) for r in rows]


def _find(conn: psycopg.Connection[Any], named: GatewayUser) -> Link | None:
    row = conn.execute(
        """
        SELECT gateway, external_id, user_id, created_at FROM gateway_user_links
        WHERE gateway = %s AND external_id = %s
        """,
        (named.gateway, named.id),
    ).fetchone()
    return Link(*row) if row is not None else None
