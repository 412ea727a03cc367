"""Errors as data: one root, split into retriable and permanent.

A permanent error carries a machine-readable reason code and becomes a dead-letter record;
a retriable one makes the caller retry the whole batch with backoff.
"""

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


class RetriableError(PipelineError):
    """The operation may succeed if repeated: connection lost, serialization, deadlock."""


class PermanentError(PipelineError):
    """Repeating will not help: bad input, unknown model, conflicting duplicate."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
