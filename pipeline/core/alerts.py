"""Credit alerts: when a balance change raises one, and the alert it raises.

A mark raises one alert when a deduction crosses it downwards: `low_balance` at the
low-water mark, `exhausted` at zero. An alert's id derives from the request and its kind,
so a replayed batch writes the same alert again and the outbox keeps one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID

ALERT_NAMESPACE = uuid.UUID("0b6f5a4e-3c1d-4a8e-9d55-6f1d2f7f0a11")


class AlertKind(StrEnum):
    LOW_BALANCE = "low_balance"
    EXHAUSTED = "exhausted"


@dataclass(frozen=True, slots=True)
class Alert:
    """One `credit_alert_outbox` row."""

    id: UUID
    user_id: UUID
    kind: AlertKind
    balance: int
    low_water: int
    request_id: UUID


def crossings(before: int, after: int, low_water: int) -> list[AlertKind]:
    """The marks one balance change crosses downwards, each once."""
    kinds = []
    if before >= low_water > after:
        kinds.append(AlertKind.LOW_BALANCE)
    if before > 0 >= after:
        kinds.append(AlertKind.EXHAUSTED)
    return kinds


def alerts_for(user: UUID, request: UUID, before: int, after: int, low_water: int) -> list[Alert]:
    """The alerts of one deduction of `user`'s balance from `before` to `after`."""
    return [
        Alert(
            uuid.uuid5(ALERT_NAMESPACE, f"{request}:{kind}"), user, kind, after, low_water, request
        )
        for kind in crossings(before, after, low_water)
    ]
