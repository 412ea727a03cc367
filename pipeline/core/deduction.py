"""Deduction planning: which credit sources pay, in what order.

Sources pay soonest-expiring first, sources without expiry last, then oldest first;
expired or empty sources never pay. Usage that already happened is never refused: what
the sources cannot cover is an overdraft and the balance goes negative.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID


@dataclass(frozen=True, slots=True)
class Source:
    """One row of `user_credit_source`."""

    id: UUID
    amount: int
    expires_at: datetime | None
    created_at: datetime

    def usable(self, now: datetime) -> bool:
        return self.amount > 0 and (self.expires_at is None or self.expires_at > now)


def spending_order(sources: list[Source], now: datetime) -> list[Source]:
    """Usable sources in the order they pay."""
    usable = [s for s in sources if s.usable(now)]
    return sorted(
        usable,
        key=lambda s: (s.expires_at is None, s.expires_at or s.created_at, s.created_at, s.id),
    )


class Wallet:
    """One user's usable sources in spending order, spent down take by take.

    The order depends only on expiry and age, so it is computed once per user and batch;
    each take then walks from the first source that still holds credits.
    """

    def __init__(self, sources: list[Source], now: datetime) -> None:
        order = spending_order(sources, now)
        self.ids = [s.id for s in order]
        self.left = [s.amount for s in order]
        self.first = 0
        self.changed: dict[UUID, int] = {}
        """The new amount of every source taken from."""

    def take(self, credits: int) -> int:
        """Spend `credits` from the sources in order; returns the overdraft, what they
        could not cover. What each source holds after it is in `changed`."""
        remaining = credits
        i = self.first
        while remaining and i < len(self.left):
            taken = min(self.left[i], remaining)
            self.left[i] -= taken
            remaining -= taken
            self.changed[self.ids[i]] = self.left[i]
            if self.left[i] == 0:
                i += 1
        self.first = i
        return remaining
