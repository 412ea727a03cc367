"""The chaos drill's oracle: what the books must hold after a run, and whether they do.

Pure functions. `expect` works out, from the generated events alone, which requests must
be booked, which must be dead-lettered with which reason, and every user's totals and
final balance. It uses only the event contract (`events.decode`), the pure pricing
functions and a snapshot of the price and margin tables taken before the run; tier, BYOK
and granted credits come from the generator's own user list. It never reads the books or
the booking code, so a bug in either shows up as a difference. `verdict` compares that
with what the books and the dead-letter topic hold after the run.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from uuid import UUID

from pipeline.core.events import Rejection, UsageEvent, decode
from pipeline.core.live_usage import DayTotals
from pipeline.core.pricing import (
    MarginConfig,
    Price,
    price_event,
    resolve_margin,
)
from pipeline.errors import Reason
from pipeline.ops.demo.sample import DemoUser

KILL = "kill -9 a worker, restart it"
KILL_ONE_OF_TWO = "kill -9 one of two workers, run on one, then restart it"
RESTART_POSTGRES = "restart PostgreSQL"
READ_ONLY_POSTGRES = "PostgreSQL read-only for a while"
RESTART_KAFKA = "restart the Kafka broker"


@dataclass(frozen=True)
class PriceBook:
    """The reference data read before the run: providers, prices, approved margins."""

    providers: dict[str, UUID]
    """Lower-cased provider name and api_type -> provider id."""
    prices: dict[tuple[UUID, str], list[Price]]
    margins: list[MarginConfig]


@dataclass(frozen=True, slots=True)
class Totals:
    """One user's books: requests, tokens, cost, credits charged, final balance."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    vendor_cost: Decimal = Decimal(0)
    credits: int = 0
    balance: int = 0

    def add(self, input_tokens: int, output_tokens: int, cost: Decimal, credits: int) -> Totals:
        return Totals(
            self.requests + 1,
            self.input_tokens + input_tokens,
            self.output_tokens + output_tokens,
            self.vendor_cost + cost,
            self.credits + credits,
            self.balance - credits,
        )


@dataclass
class Expected:
    booked: set[UUID] = field(default_factory=set)
    """Requests that must have exactly one usage row."""
    booked_at: list[int] = field(default_factory=list)
    """The index of the line that books each of them, in order: the books hold
    `bisect_right(booked_at, n - 1)` rows once the first `n` lines are consumed."""
    charged: set[UUID] = field(default_factory=set)
    """Requests that must have exactly one deduction row (more than zero credits)."""
    rejected: Counter[tuple[bytes, str]] = field(default_factory=Counter)
    """(original value, reason) -> times published; each must reach the dead letters."""
    duplicates: int = 0
    totals: dict[UUID, Totals] = field(default_factory=dict)


def expect(
    lines: Iterable[bytes],
    users: Sequence[DemoUser],
    book: PriceBook,
    now: datetime,
    usd_per_credit: Decimal,
    max_future_skew: timedelta,
) -> Expected:
    """What the books must hold once every line has been consumed, whatever the faults."""
    by_id = {u.id: u for u in users}
    out = Expected(totals={u.id: Totals(balance=u.credits) for u in users})
    seen: dict[UUID, bytes] = {}
    for index, line in enumerate(lines):
        event = decode(line, now, max_future_skew)
        if isinstance(event, Rejection):
            out.rejected[(line, event.reason.value)] += 1
            continue
        earlier = seen.get(event.request_id)
        if earlier is not None:
            if earlier == event.fingerprint():
                out.duplicates += 1
            else:
                out.rejected[(line, Reason.DUPLICATE_CONFLICT.value)] += 1
            continue
        reason, cost, credits = _price(event, by_id, book, usd_per_credit)
        if reason is not None:
            out.rejected[(line, reason.value)] += 1
            continue
        seen[event.request_id] = event.fingerprint()
        out.booked.add(event.request_id)
        out.booked_at.append(index)
        if credits:
            out.charged.add(event.request_id)
        out.totals[event.user_id] = out.totals[event.user_id].add(
            event.input_tokens, event.output_tokens, cost, credits
        )
    return out


def _price(
    event: UsageEvent, users: dict[UUID, DemoUser], book: PriceBook, usd_per_credit: Decimal
) -> tuple[Reason | None, Decimal, int]:
    """(rejection reason or None, vendor cost, credits) of one valid event."""
    user = users.get(event.user_id)
    if user is None:
        return Reason.UNKNOWN_USER, Decimal(0), 0
    provider_id = book.providers.get(event.provider.lower())
    if provider_id is None:
        return Reason.UNKNOWN_PROVIDER, Decimal(0), 0
    if user.byok:
        return None, Decimal(0), 0
    prices = book.prices.get((provider_id, event.model), [])
    # The margin is resolved the unmemoized way, over the snapshot's own list.
    cost = price_event(
        event, provider_id, user.tier or "free", prices, partial(resolve_margin, book.margins),
        usd_per_credit,
    )  # fmt: skip
    if isinstance(cost, Rejection):
        return cost.reason, Decimal(0), 0
    return None, cost.vendor_cost, cost.credits


@dataclass(frozen=True)
class Observed:
    """What the books and the dead-letter topic hold after the run."""

    usage_rows: Counter[UUID]
    """request_id -> usage rows."""
    deductions: Counter[UUID]
    """request_id -> deduction rows."""
    dead_letters: Counter[tuple[bytes, str]]
    """(original value, reason) -> dead-letter records."""
    violations: list[str]
    """What `reconcile` found."""
    totals: dict[UUID, Totals]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    passed: bool
    detail: str


def verdict(expected: Expected, observed: Observed, users: Sequence[DemoUser]) -> list[Check]:
    """Every check of the drill, passed or not, with the numbers behind it."""
    rows = observed.usage_rows
    missing = expected.booked - set(rows)
    unexpected = set(rows) - expected.booked
    doubled = [r for r, n in rows.items() if n > 1]
    charged_twice = [r for r, n in observed.deductions.items() if n > 1]
    wrong_charge = set(observed.deductions) ^ expected.charged
    short = expected.rejected - observed.dead_letters
    stray = [k for k in observed.dead_letters if k not in expected.rejected]
    repeats = sum((observed.dead_letters - expected.rejected).values()) - sum(
        observed.dead_letters[k] for k in stray
    )
    differing = [
        f"{u.email}: expected {_show(expected.totals[u.id])}, "
        f"found {_show(observed.totals.get(u.id, Totals()))}"
        for u in users
        if observed.totals.get(u.id, Totals()) != expected.totals[u.id]
    ]
    return [
        Check(
            "every valid event has exactly one ledger row",
            not (missing or unexpected or doubled),
            f"{len(expected.booked)} expected, {len(rows)} booked; {len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(doubled)} with more than one row",
        ),
        Check(
            "no request is charged twice",
            not (charged_twice or wrong_charge),
            f"{sum(observed.deductions.values())} deductions for {len(expected.charged)} "
            f"charged requests; {len(charged_twice)} charged twice, "
            f"{len(wrong_charge)} charged that should not be or not charged that should",
        ),
        Check(
            "every rejected event is in the DLQ with its reason",
            not (short or stray),
            f"{sum(expected.rejected.values())} rejected "
            f"({_reasons(expected.rejected)}); {sum(short.values())} missing, "
            f"{len(stray)} unexpected dead letters, {repeats} repeated after a redelivery",
        ),
        Check(
            "reconcile is clean",
            not observed.violations,
            "no violation" if not observed.violations else "; ".join(observed.violations[:5]),
        ),
        Check(
            "per-user totals equal the independent computation",
            not differing,
            f"{len(users)} users match (requests, tokens, vendor cost, credits, balance)"
            if not differing
            else "; ".join(differing),
        ),
    ]


def _show(t: Totals) -> str:
    return (
        f"{t.requests} req, {t.input_tokens}/{t.output_tokens} tokens, "
        f"USD {t.vendor_cost}, {t.credits} credits, balance {t.balance}"
    )


def _reasons(rejected: Counter[tuple[bytes, str]]) -> str:
    by_reason: Counter[str] = Counter()
    for (_, reason), n in rejected.items():
        by_reason[reason] += n
    return ", ".join(f"{reason} {n}" for reason, n in sorted(by_reason.items())) or "none"


def survivor_goal(booked_at: Sequence[int], at: int, sent: int) -> tuple[int, int]:
    """The rows the survivor of a kill of one of two workers must reach alone (a twentieth
    of the sample past the `at` booked when the fault struck), and the lines that must be
    published for them: `sent`, or more when the goal lies in the lines held back.

    The publisher holds the end of the sample back until the last fault, and the fault
    strikes once its mark is booked; a catch-up take (after a broker restart) can book up
    to the hold past the mark, and a goal beyond what is published is never reached.
    """
    goal = min(len(booked_at), at + max(1, len(booked_at) // 20))
    needed = booked_at[goal - 1] + 1 if goal > 0 else 0
    return goal, max(sent, needed)


def fault_plan(kills: int, rng: random.Random) -> list[str]:
    """The faults of one run in a random order: ``kills`` worker kills, one kill of one of
    two workers, one PostgreSQL restart, one spell of PostgreSQL read-only and one Kafka
    restart."""
    faults = [KILL] * kills + [KILL_ONE_OF_TWO, RESTART_POSTGRES, READ_ONLY_POSTGRES, RESTART_KAFKA]
    rng.shuffle(faults)
    return faults


VIEW_LOSING_FAULTS = (KILL, KILL_ONE_OF_TWO, RESTART_KAFKA)
"""Faults that can lose view increments (README, "Live usage view"): a worker gone between
a commit and its changelog write, a rebalance."""


def live_view_check(
    ledger: dict[UUID, DayTotals], view: dict[UUID, DayTotals | None], faults: Sequence[str]
) -> Check:
    """After the drain, each user's live view of today against the ledger's rows of today:
    equal, or short where a fault of the run explains it; never above the books."""
    unanswered = [u for u, seen in view.items() if seen is None]
    answered = {u: seen for u, seen in view.items() if seen is not None}
    equal = [u for u, seen in answered.items() if seen == ledger.get(u, DayTotals())]
    above = [u for u, seen in answered.items() if not _at_most(seen, ledger.get(u, DayTotals()))]
    short = [u for u in answered if u not in equal and u not in above]
    losing = [f for f in faults if f in VIEW_LOSING_FAULTS]
    missed = sum(ledger.get(u, DayTotals()).requests - answered[u].requests for u in short)
    detail = (
        f"{len(equal)} of {len(view)} users equal the ledger's day; {len(short)} short by "
        f"{missed} requests in all, {len(above)} above it, {len(unanswered)} unanswered"
    )
    if short:
        detail += (
            f" (explained: {len(losing)} faults that can lose view increments)"
            if losing
            else " (no fault of the run explains it)"
        )
    return Check(
        "the live view's totals equal the ledger's day",
        not above and not unanswered and (not short or bool(losing)),
        detail,
    )


def _at_most(seen: DayTotals, books: DayTotals) -> bool:
    return all(a <= b for a, b in zip(astuple(seen), astuple(books), strict=True))
