"""Bulk loading: take a table's indexes and key constraints off while it is filled.

Inserting millions of rows into a table with nine indexes and four foreign keys costs a
random index insertion per index and a trigger call per foreign key for every row; building
each index once afterwards (a sort) and checking each foreign key with one join is several
times faster. That is what `pg_restore` does too. Everything happens inside the caller's
transaction, so a failure leaves the definitions as they were.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

Cursor = psycopg.Cursor[Any]

# Key constraints of the tables and the foreign keys that point at them or out of them.
_CONSTRAINTS = """
SELECT c.conrelid::regclass::text, c.conname, c.contype::text, pg_get_constraintdef(c.oid)
FROM pg_constraint c
WHERE c.contype IN ('p', 'u', 'f')
  AND (c.conrelid = ANY(%(tables)s::regclass[]) OR c.confrelid = ANY(%(tables)s::regclass[]))
ORDER BY c.contype = 'f', c.conrelid::regclass::text, c.conname
"""

# Indexes that no constraint owns.
_INDEXES = """
SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
FROM pg_index i
WHERE i.indrelid = ANY(%(tables)s::regclass[])
  AND NOT EXISTS (SELECT FROM pg_constraint c WHERE c.conindid = i.indexrelid)
ORDER BY 1
"""


@contextmanager
def without_indexes(cur: Cursor, tables: Sequence[str]) -> Iterator[None]:
    """Drop the tables' indexes, key constraints and related foreign keys; restore on exit.

    Restored in dependency order: primary and unique keys, then the other indexes, then
    the foreign keys (each validated by one query). On an exception nothing is restored:
    the caller's transaction is rolled back anyway.
    """
    params = {"tables": list(tables)}
    cur.execute(_CONSTRAINTS, params)
    constraints: list[tuple[str, str, str, str]] = cur.fetchall()
    cur.execute(_INDEXES, params)
    indexes: list[tuple[str, str]] = cur.fetchall()
    # Foreign keys first: a primary key cannot go while a foreign key depends on it.
    for table, name, _, _ in sorted(constraints, key=lambda c: c[2] != "f"):
        cur.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                sql.SQL(table), sql.Identifier(name)
            )
        )
    for index, _ in indexes:
        cur.execute(sql.SQL("DROP INDEX {}").format(sql.SQL(index)))
    yield
    for table, name, kind, definition in constraints:
        if kind != "f":
            _add_constraint(cur, table, name, definition)
    for _, definition in indexes:
        cur.execute(sql.SQL(definition))
    for table, name, kind, definition in constraints:
        if kind == "f":
            _add_constraint(cur, table, name, definition)


def _add_constraint(cur: Cursor, table: str, name: str, definition: str) -> None:
    # `table` and `definition` come from the catalog's own quoting (regclass, pg_get_*def).
    cur.execute(
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
            sql.SQL(table),
            sql.Identifier(name),
            sql.SQL(definition),
        )
    )
