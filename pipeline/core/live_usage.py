"""Per-user, per-UTC-day usage totals for the live view: pure aggregation and its JSON.

A committed batch's newly booked usage rows (`BatchPlan.usage_rows`, exactly the rows the
transaction inserted, so redeliveries never appear) are summed into one `DayTotals` delta
per (user, UTC day of `request_started_at`) by `pipeline.core.rollup.user_days`, the very
increment the daily summary books receive.
`pipeline/stream/live_view.py` adds those deltas into a Faust windowed table and serves them.

Totals travel through the table's changelog as JSON: integers stay integers and the vendor
cost is a decimal string, so no float ever touches money.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from pipeline.core.rollup import UserDay

BEST_EFFORT_NOTE = (
    "live view from the stream, best effort; the PostgreSQL ledger and daily summaries "
    "are the books"
)


@dataclass(frozen=True, slots=True)
class DayTotals:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    credits: int = 0
    vendor_cost: Decimal = Decimal(0)

    def plus(self, other: DayTotals) -> DayTotals:
        return DayTotals(
            *(getattr(self, f.name) + getattr(other, f.name) for f in fields(DayTotals))
        )

    def to_json(self) -> dict[str, int | str]:
        totals: dict[str, int | str] = {f.name: getattr(self, f.name) for f in fields(self)}
        totals["vendor_cost"] = format(self.vendor_cost, "f")  # never exponent notation
        return totals

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DayTotals:
        """Read totals back from the changelog; a missing field counts as zero."""
        ints = {f.name: int(data.get(f.name, 0)) for f in fields(cls) if f.name != "vendor_cost"}
        return cls(**ints, vendor_cost=Decimal(str(data.get("vendor_cost", "0"))))


def day_deltas(days: Mapping[tuple[UUID, date], UserDay]) -> dict[tuple[UUID, date], DayTotals]:
    """A batch's per (user, UTC day the request started) rollup of its newly booked rows
    (`BatchPlan.user_days`, computed once for the books) as the view's totals."""
    return {
        key: DayTotals(
            day.requests, day.input_tokens, day.output_tokens, day.credits, day.vendor_cost
        )
        for key, day in days.items()
    }


def merge_json(current: Mapping[str, Any], delta: Mapping[str, Any]) -> dict[str, int | str]:
    """The windowed table's add operation, on the JSON form the changelog stores."""
    return DayTotals.from_json(current).plus(DayTotals.from_json(delta)).to_json()


def paced_writes(owed: float, pending: int, share: float, most: int) -> tuple[int, float]:
    """How many of `pending` deltas to write now, and the fraction of a write still owed.

    Called once a tick, with `share` the tick's part of the interval each delta may wait:
    each tick owes that part of what is pending (so in a steady state a delta waits about
    one interval), at most `most` writes a tick; fractions carry to the next tick.
    """
    owed = min(owed + pending * share, most)
    count = int(owed)
    return count, owed - count


def day_start(day: date) -> float:
    """Epoch seconds of the day's UTC midnight: a timestamp inside that day's window."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def parse_user_id(text: str) -> UUID | str:
    """The user id of a request path, or a one-line reason it is not one."""
    try:
        return UUID(text)
    except ValueError:
        shown = text if len(text) <= 64 else text[:61] + "..."
        return f"user_id must be a UUID, got {shown!r}"


def view(user_id: UUID, day: date, totals: DayTotals) -> dict[str, Any]:
    """The JSON body of `GET /users/{user_id}/usage/today`."""
    return {
        "user_id": str(user_id),
        "day": day.isoformat(),
        **totals.to_json(),
        "source": "live",
        "best_effort": True,
        "note": BEST_EFFORT_NOTE,
    }
