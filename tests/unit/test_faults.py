import re

import psycopg
import psycopg.errors as errors
import pytest

from pipeline import REPOSITORY
from pipeline.books.faults import blames_the_event


@pytest.mark.parametrize(
    "error",
    [errors.NumericValueOutOfRange, errors.StringDataRightTruncation, errors.CheckViolation,
     errors.NotNullViolation, errors.ForeignKeyViolation],
)  # fmt: skip
def test_a_value_the_schema_refuses_is_the_events_fault(error: type[psycopg.Error]) -> None:
    assert blames_the_event(error("refused"))


@pytest.mark.parametrize(
    "error",
    [errors.UniqueViolation, errors.ReadOnlySqlTransaction, errors.InsufficientPrivilege,
     errors.UndefinedTable, errors.UndefinedColumn, errors.SerializationFailure,
     errors.DeadlockDetected, errors.AdminShutdown, errors.DiskFull, errors.QueryCanceled,
     psycopg.OperationalError, psycopg.InterfaceError],
)  # fmt: skip
def test_everything_else_is_ours(error: type[psycopg.Error]) -> None:
    assert not blames_the_event(error("ours"))


def documented() -> list[tuple[str, bool]]:
    """(SQLSTATE, the event's fault?) of each code docs/database-faults.md's table names:
    a row's examples, and its first cell when that is one code."""
    lines = (REPOSITORY / "docs" / "database-faults.md").read_text().splitlines()
    codes = []
    for line in lines:
        if not line.startswith("| `"):
            continue
        first, what, whose, *_ = (cell.strip() for cell in line.split("|")[1:-1])
        named = re.findall(r"`([0-9A-Z]{5})`", what)
        if re.fullmatch(r"`[0-9A-Z]{5}`", first):
            named.append(first.strip("`"))
        codes += [(code, whose == "the event's") for code in named]
    return codes


def test_the_documented_table_is_what_the_code_decides() -> None:
    table = documented()
    assert len(table) >= 20 and any(blamed for _, blamed in table), table
    for code, blamed in table:
        assert blames_the_event(errors.lookup(code)("documented")) == blamed, code
