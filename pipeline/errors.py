"""Errors as data: why an event was rejected, a refused money movement, and the one root
of the exceptions the pipeline raises on purpose."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

R = TypeVar("R", bound=StrEnum)


@dataclass(frozen=True, slots=True)
class Refused(Generic[R]):
    """A money movement that was refused (nothing written), with its reason code."""

    reason: R
    detail: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


class Reason(StrEnum):
    """Why an event was rejected: the `reason` of its dead-letter record."""

    MALFORMED_JSON = "malformed_json"
    SCHEMA_VIOLATION = "schema_violation"
    UNKNOWN_USER = "unknown_user"
    UNKNOWN_PROVIDER = "unknown_provider"
    UNKNOWN_MODEL = "unknown_model"
    NO_PRICING_CONFIG = "no_pricing_config"
    DUPLICATE_CONFLICT = "duplicate_conflict"
    COST_OUT_OF_RANGE = "cost_out_of_range"
    DATABASE_REJECTED = "database_rejected"


class PipelineError(Exception):
    """Root of every error the pipeline raises on purpose."""


def first_line(exc: BaseException) -> str:
    """The first line of an error's message, or its type's name when it has none: what a
    one-line error shows of a driver's multi-line message."""
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__
