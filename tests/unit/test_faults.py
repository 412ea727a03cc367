import psycopg
import psycopg.errors as errors
import pytest

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
