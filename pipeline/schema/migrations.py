"""Our own small migration runner over the numbered plain-SQL files in ``sql/``.

A migration is a pair ``NNN_name.up.sql`` / ``NNN_name.down.sql``. Each one runs in its own
transaction and is recorded in ``schema_migrations`` (version, name, applied_at, checksum);
the checksum is the sha256 of the up file, so an applied migration that was edited later is
reported instead of silently diverging. Every transaction first takes a transaction-level
advisory lock, so two migrators started at once apply each migration once.

Who runs them: the database's owner (``DATABASE_URL``), which need not be a superuser, as
on a managed PostgreSQL (RDS, Cloud SQL, Azure). It needs to **own the database** (from
PostgreSQL 15 only the owner may create in its ``public`` schema) and **CREATEROLE**:
migrations 009 and 013 create the cluster-wide group roles ``pipeline_writer``,
``finance_reader`` and ``api_reader`` unless they exist. From PostgreSQL 16 on, a role
made by a CREATEROLE owner comes with ADMIN OPTION to it, which `db grant-login` needs to
grant the role; if another role made them (another database's owner, say), the
migrations still apply (a table's owner grants on it to any role) but that role must
first run ``GRANT pipeline_writer, finance_reader, api_reader TO <owner> WITH ADMIN
OPTION``. No migration needs a superuser, an extension or a setting of the server.

Statements that cannot run in a transaction (``CREATE INDEX CONCURRENTLY``) are not
supported. Planning (which files to apply or undo) is pure; the shell reads files and talks
to PostgreSQL.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from pipeline import REPOSITORY
from pipeline.errors import PipelineError, first_line

DEFAULT_SQL_DIR = REPOSITORY / "sql"

# Arbitrary but fixed: every migrator of every database takes the same lock.
_ADVISORY_LOCK_KEY = 0x75_73_61_67_65  # "usage"

_FILE_NAME = re.compile(r"(?P<version>\d+)_(?P<slug>[a-z0-9_]+)\.(?P<direction>up|down)\.sql")
_LOOKS_NUMBERED = re.compile(r"\d+_.*\.sql")

_CREATE_TABLE = sql.SQL(
    """
    CREATE TABLE IF NOT EXISTS schema_migrations (
        version    integer     PRIMARY KEY,
        name       text        NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now(),
        checksum   text        NOT NULL
    )
    """
)


class MigrationError(PipelineError):
    """The migration files or the recorded history are inconsistent; nothing was changed."""


class MigrationState(StrEnum):
    """Where a migration stands in one database."""

    APPLIED = "applied"
    PENDING = "pending"
    CHANGED = "changed"
    """Applied, but its up file has changed since."""
    MISSING = "missing"
    """Applied, but no longer in the sql directory."""


@dataclass(frozen=True)
class Migration:
    """One up/down pair read from the sql directory."""

    version: int
    name: str
    up_sql: bytes
    down_sql: bytes

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.up_sql).hexdigest()


@dataclass(frozen=True)
class AppliedMigration:
    """One row of ``schema_migrations``."""

    version: int
    name: str
    applied_at: datetime
    checksum: str


@dataclass(frozen=True)
class MigrationStatus:
    """One line of ``status``."""

    version: int
    name: str
    state: MigrationState
    applied_at: datetime | None


def parse_migrations(files: Mapping[str, bytes]) -> list[Migration]:
    """Pair up and down files by version, sorted by version.

    ``files`` maps file names to contents. Files that do not start with digits and an
    underscore are ignored; a numbered file that breaks the naming rule, a version used by two
    names, or an up without its down (or the reverse) is an error.
    """
    halves: dict[int, dict[str, tuple[str, bytes]]] = {}
    for file_name, content in files.items():
        if not _LOOKS_NUMBERED.fullmatch(file_name):
            continue
        match = _FILE_NAME.fullmatch(file_name)
        if match is None:
            raise MigrationError(
                f"bad migration file name {file_name!r}: expected NNN_name.up.sql or "
                "NNN_name.down.sql (lower case, digits, underscores)"
            )
        version = int(match["version"])
        name = f"{match['version']}_{match['slug']}"
        pair = halves.setdefault(version, {})
        for other_name, _ in pair.values():
            if other_name != name:
                raise MigrationError(f"version {version} is used by {other_name} and {name}")
        pair[match["direction"]] = (name, content)

    migrations = []
    for version in sorted(halves):
        pair = halves[version]
        if "up" not in pair or "down" not in pair:
            present = next(iter(pair.values()))[0]
            lacking = "up" if "up" not in pair else "down"
            raise MigrationError(f"migration {present} has no {lacking} file")
        name, up_sql = pair["up"]
        migrations.append(Migration(version, name, up_sql, pair["down"][1]))
    return migrations


def plan_migrate(
    migrations: Sequence[Migration], applied: Sequence[AppliedMigration]
) -> list[Migration]:
    """The migrations still to apply, in order; an error if the history does not allow it."""
    by_version = {m.version: m for m in migrations}
    for record in applied:
        migration = by_version.get(record.version)
        if migration is None:
            raise MigrationError(f"applied migration {record.name} is not in the sql directory")
        if migration.checksum != record.checksum:
            raise MigrationError(
                f"applied migration {record.name} has been edited since it was applied; "
                "roll it back or restore the file"
            )
    done = {record.version for record in applied}
    pending = [m for m in migrations if m.version not in done]
    if pending and applied:
        latest = max(applied, key=lambda record: record.version)
        if pending[0].version < latest.version:
            raise MigrationError(
                f"migration {pending[0].name} is older than the applied migration "
                f"{latest.name}; give it a number above the applied ones"
            )
    return pending


def plan_rollback(
    migrations: Sequence[Migration], applied: Sequence[AppliedMigration], steps: int
) -> list[Migration]:
    """The last ``steps`` applied migrations, newest first.

    The down files on disk are used as they are now, even if an up file was edited since it
    was applied: that is how an edited migration is undone during development.
    """
    if steps < 1:
        raise MigrationError(f"steps must be at least 1, not {steps}")
    by_version = {m.version: m for m in migrations}
    undo = sorted(applied, key=lambda record: record.version, reverse=True)[:steps]
    for record in undo:
        if record.version not in by_version:
            raise MigrationError(f"applied migration {record.name} is not in the sql directory")
    return [by_version[record.version] for record in undo]


def migration_status(
    migrations: Sequence[Migration], applied: Sequence[AppliedMigration]
) -> list[MigrationStatus]:
    """Every known migration, on disk or recorded, by version."""
    records = {record.version: record for record in applied}
    lines = []
    for migration in migrations:
        record = records.pop(migration.version, None)
        if record is None:
            state = MigrationState.PENDING
        elif record.checksum != migration.checksum:
            state = MigrationState.CHANGED
        else:
            state = MigrationState.APPLIED
        applied_at = record.applied_at if record else None
        lines.append(MigrationStatus(migration.version, migration.name, state, applied_at))
    for record in records.values():
        lines.append(
            MigrationStatus(record.version, record.name, MigrationState.MISSING, record.applied_at)
        )
    return sorted(lines, key=lambda line: line.version)


def load_migrations(sql_dir: Path | None = None) -> list[Migration]:
    """Read and pair the migration files of ``sql_dir`` (default: the repository's ``sql/``)."""
    directory = DEFAULT_SQL_DIR if sql_dir is None else sql_dir
    if not directory.is_dir():
        raise MigrationError(f"migration directory {directory} does not exist")
    return parse_migrations({p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()})


def migrate(conn: psycopg.Connection, sql_dir: Path | None = None) -> list[str]:
    """Apply every pending migration, each in its own transaction; return the names applied."""
    migrations = load_migrations(sql_dir)
    _require_idle(conn)
    names: list[str] = []
    while True:
        with conn.transaction():
            applied = _lock_and_read(conn)
            pending = plan_migrate(migrations, applied)
            if not pending:
                return names
            migration = pending[0]
            _run_script(conn, migration, migration.up_sql)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
        names.append(migration.name)


def rollback(conn: psycopg.Connection, steps: int = 1, sql_dir: Path | None = None) -> list[str]:
    """Undo the last ``steps`` applied migrations, newest first; return the names undone.

    Fewer are undone if fewer are applied.
    """
    migrations = load_migrations(sql_dir)
    _require_idle(conn)
    names: list[str] = []
    while len(names) < steps:
        with conn.transaction():
            applied = _lock_and_read(conn)
            if not applied:
                break
            (migration,) = plan_rollback(migrations, applied, steps=1)
            _run_script(conn, migration, migration.down_sql)
            conn.execute("DELETE FROM schema_migrations WHERE version = %s", (migration.version,))
        names.append(migration.name)
    return names


def status(conn: psycopg.Connection, sql_dir: Path | None = None) -> list[MigrationStatus]:
    """Every migration on disk or recorded in the database, with its state."""
    migrations = load_migrations(sql_dir)
    _require_idle(conn)
    with conn.transaction():
        exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        applied = _read_applied(conn) if exists and exists[0] else []
    return migration_status(migrations, applied)


def _require_idle(conn: psycopg.Connection) -> None:
    # Inside a caller's transaction, conn.transaction() would only make savepoints and
    # nothing would be committed per migration.
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise MigrationError("the connection has an open transaction; commit or roll it back")


def _lock_and_read(conn: psycopg.Connection) -> list[AppliedMigration]:
    # The lock comes first: concurrent CREATE TABLE IF NOT EXISTS can itself fail.
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK_KEY,))
    conn.execute(_CREATE_TABLE)
    return _read_applied(conn)


def _read_applied(conn: psycopg.Connection) -> list[AppliedMigration]:
    rows = conn.execute(
        "SELECT version, name, applied_at, checksum FROM schema_migrations ORDER BY version"
    ).fetchall()
    return [AppliedMigration(*row) for row in rows]


def _run_script(conn: psycopg.Connection, migration: Migration, script: bytes) -> None:
    try:
        conn.execute(script)
    except psycopg.Error as exc:
        raise MigrationError(f"migration {migration.name} failed: {first_line(exc)}") from exc
