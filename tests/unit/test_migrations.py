"""The pure half of the migration runner: pairing files and planning what to run."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.schema.migrations import (
    DEFAULT_SQL_DIR,
    AppliedMigration,
    Migration,
    MigrationError,
    MigrationState,
    load_migrations,
    migration_status,
    parse_migrations,
    plan_migrate,
    plan_rollback,
)

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def files(*names: str) -> dict[str, bytes]:
    return {name: f"-- {name}".encode() for name in names}


def pairs(count: int) -> list[Migration]:
    names = []
    for version in range(1, count + 1):
        names += [f"{version:03d}_m{version}.up.sql", f"{version:03d}_m{version}.down.sql"]
    return parse_migrations(files(*names))


def applied(*migrations: Migration) -> list[AppliedMigration]:
    return [AppliedMigration(m.version, m.name, NOW, m.checksum) for m in migrations]


def test_pairs_up_and_down_files_by_version_and_ignores_other_files() -> None:
    found = parse_migrations(
        files(
            "002_ledgers.down.sql",
            "001_users.up.sql",
            "002_ledgers.up.sql",
            "001_users.down.sql",
            "README.md",
            "seed_data.sql",
        )
    )
    assert [(m.version, m.name) for m in found] == [(1, "001_users"), (2, "002_ledgers")]
    assert found[0].up_sql == b"-- 001_users.up.sql"
    assert found[0].down_sql == b"-- 001_users.down.sql"


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (("001_users.up.sql",), "has no down file"),
        (("001_users.down.sql",), "has no up file"),
        (("001_users.up.sql", "001_users.down.sql", "001_other.up.sql"), "is used by"),
        (("001_Users.up.sql",), "bad migration file name"),
        (("001_users.sql",), "bad migration file name"),
    ],
)
def test_rejects_inconsistent_files(names: tuple[str, ...], message: str) -> None:
    with pytest.raises(MigrationError, match=message):
        parse_migrations(files(*names))


def test_checksum_follows_the_up_file_only() -> None:
    (one,) = parse_migrations({"001_a.up.sql": b"up", "001_a.down.sql": b"down"})
    (same,) = parse_migrations({"001_a.up.sql": b"up", "001_a.down.sql": b"other down"})
    (edited,) = parse_migrations({"001_a.up.sql": b"up edited", "001_a.down.sql": b"down"})
    assert one.checksum == same.checksum != edited.checksum


@given(st.integers(min_value=0, max_value=8), st.integers(min_value=0, max_value=8))
def test_migrate_applies_the_rest_in_order_and_rollback_undoes_newest_first(
    total: int, done: int
) -> None:
    migrations = pairs(total)
    done = min(done, total)
    history = applied(*migrations[:done])
    assert plan_migrate(migrations, history) == migrations[done:]
    for steps in range(1, done + 2):
        undo = plan_rollback(migrations, history, steps)
        assert undo == list(reversed(migrations[:done]))[:steps]


def test_migrate_refuses_an_edited_applied_migration() -> None:
    migrations = pairs(2)
    history = [AppliedMigration(1, migrations[0].name, NOW, "0" * 64)]
    with pytest.raises(MigrationError, match="has been edited"):
        plan_migrate(migrations, history)


def test_migrate_refuses_an_applied_migration_that_is_gone() -> None:
    migrations = pairs(3)
    with pytest.raises(MigrationError, match="not in the sql directory"):
        plan_migrate(migrations[:1], applied(*migrations[:2]))


def test_migrate_refuses_a_new_migration_numbered_below_an_applied_one() -> None:
    migrations = pairs(3)
    with pytest.raises(MigrationError, match="older than the applied migration 003"):
        plan_migrate(migrations, applied(migrations[0], migrations[2]))


def test_rollback_needs_a_positive_step_count_and_the_files() -> None:
    migrations = pairs(2)
    with pytest.raises(MigrationError, match="at least 1"):
        plan_rollback(migrations, applied(*migrations), 0)
    with pytest.raises(MigrationError, match="not in the sql directory"):
        plan_rollback(migrations[:1], applied(*migrations), 1)


def test_status_reports_every_state() -> None:
    migrations = pairs(4)
    history = [
        *applied(migrations[0]),
        AppliedMigration(2, migrations[1].name, NOW, "0" * 64),
        AppliedMigration(9, "009_gone", NOW, "0" * 64),
    ]
    lines = migration_status(migrations, history)
    assert [(line.name, line.state) for line in lines] == [
        ("001_m1", MigrationState.APPLIED),
        ("002_m2", MigrationState.CHANGED),
        ("003_m3", MigrationState.PENDING),
        ("004_m4", MigrationState.PENDING),
        ("009_gone", MigrationState.MISSING),
    ]
    assert [line.applied_at for line in lines] == [NOW, NOW, None, None, NOW]


def test_the_repository_migrations_are_consistent() -> None:
    migrations = load_migrations()
    assert DEFAULT_SQL_DIR.name == "sql"
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
