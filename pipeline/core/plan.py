"""Booking plan for one batch: every decision between decoded events and the SQL writes.

`plan_batch` is pure: it takes the batch's events and the reference and balance rows read
under lock, and returns the rows to insert, the balances and sources to set, the alerts
to publish and the events to dead-letter. Events are booked in consumption order, so the
per-user `balance_before`/`balance_after` chain stays exact however many events of one
user share a batch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from functools import cached_property
from typing import NamedTuple
from uuid import UUID

from pipeline.core.alerts import Alert, alerts_for
from pipeline.core.deduction import Source, Wallet
from pipeline.core.events import Decoded, Rejection, UsageEvent
from pipeline.core.pricing import (
    FREE_CHARGE,
    Charge,
    MarginResolver,
    Price,
    price_event,
)
from pipeline.core.rollup import ModelDay, UserDay, model_days, user_days
from pipeline.core.tariff import Breakdown
from pipeline.errors import Reason

BYOK_TIER = "perpetual"
DEFAULT_TIER = "free"


@dataclass(frozen=True, slots=True)
class Subscription:
    tier: str
    status: str
    period_start: datetime
    period_end: datetime


@dataclass(frozen=True)
class BookContext:
    """Everything the plan needs, read inside the batch's transaction."""

    providers: dict[str, UUID]
    """Lower-cased provider name and api_type -> provider id."""
    prices: dict[tuple[UUID, str], list[Price]]
    margins: MarginResolver
    known_users: frozenset[UUID]
    subscriptions: dict[UUID, list[Subscription]]
    byok_users: frozenset[UUID]
    balances: dict[UUID, int]
    sources: dict[UUID, list[Source]]
    booked: dict[UUID, bytes]
    """request_id -> event fingerprint of requests already in the ledger."""


class UsageRow(NamedTuple):
    """One `token_usage_ledger` row, its fields in `books`' COPY column order."""

    request_id: UUID
    user_id: UUID
    subscription_id: UUID | None
    model_id: str
    provider_id: UUID
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    vendor_cost: Decimal
    margin_multiplier: Decimal
    credit_value_usd: Decimal
    credits_deducted: int
    request_type: str
    streaming_segments: int | None
    request_started_at: datetime
    request_completed_at: datetime
    processing_time_ms: int
    status: str
    error_message: str | None
    is_streaming_complete: bool
    user_tier_at_request: str
    region: str | None
    deduction_record_id: UUID | None
    event_fingerprint: bytes
    gateway_cost_usd: Decimal | None = None
    price_breakdown: Breakdown | None = None

    @property
    def usage_date(self) -> date:
        at = self.request_started_at
        return at.date() if not at.utcoffset() else at.astimezone(UTC).date()


class DeductionRow(NamedTuple):
    """One `credit_deduction_ledger` row, its fields in `books`' COPY column order."""

    id: UUID
    user_id: UUID
    amount: int
    balance_before: int
    balance_after: int
    request_id: UUID
    token_vendor_cost: Decimal
    margin_multiplier: Decimal
    gross_margin: Decimal
    reason: str
    status: str


class OutcomeKind(StrEnum):
    """What booking did with one event (the `outcome` label of the metrics)."""

    CHARGED = "charged"
    OVERDRAFT = "overdraft"
    """Charged beyond what the user's sources held: the balance went negative."""
    FREE = "free"
    """Booked at zero credits (a price or a margin of zero, or too few tokens)."""
    BYOK = "byok"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"

    @property
    def booked(self) -> bool:
        """A new usage row was written."""
        return self not in (OutcomeKind.DUPLICATE, OutcomeKind.REJECTED)


class Outcome(NamedTuple):
    """What happened to one consumed message, in consumption order."""

    position: int
    kind: OutcomeKind
    rejection: Rejection | None = None
    row: UsageRow | None = None


@dataclass
class BatchPlan:
    usage_rows: list[UsageRow] = field(default_factory=list)
    deductions: list[DeductionRow] = field(default_factory=list)
    balances: dict[UUID, int] = field(default_factory=dict)
    source_amounts: dict[UUID, int] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)

    def rejections(self) -> list[tuple[int, Rejection]]:
        return [(o.position, o.rejection) for o in self.outcomes if o.rejection is not None]

    @cached_property
    def user_days(self) -> dict[tuple[UUID, date], UserDay]:
        """The user summary rows' increments (once: the books write them, metrics read)."""
        return user_days(self.usage_rows)

    @cached_property
    def model_days(self) -> dict[tuple[date, UUID, str], ModelDay]:
        """The model summary rows' increments (once: the books write them, metrics read)."""
        return model_days(self.usage_rows)


def tier_at(subscriptions: list[Subscription], at: datetime) -> str:
    """The tier of the active or trial subscription covering `at` (the latest started of
    them), else free."""
    best = None
    for s in subscriptions:
        if (
            s.period_start <= at < s.period_end
            and s.status in ("active", "trial")
            and (best is None or s.period_start > best.period_start)
        ):
            best = s
    return best.tier if best is not None else DEFAULT_TIER


@dataclass(slots=True)
class _Account:
    """One user's standing while a batch is planned: read from the context once."""

    known: bool
    byok: bool
    subscriptions: list[Subscription]
    balance: int
    wallet: Wallet


class _Ledger:
    """Running balances and sources while a batch is planned."""

    def __init__(self, ctx: BookContext, now: datetime, low_water: int, plan: BatchPlan) -> None:
        self.ctx = ctx
        self.now = now
        self.low_water = low_water
        self.plan = plan
        self.accounts: dict[UUID, _Account] = {}
        self.ids = RandomIds()

    def account(self, user: UUID) -> _Account:
        found = self.accounts.get(user)
        if found is None:
            ctx = self.ctx
            found = self.accounts[user] = _Account(
                known=user in ctx.known_users,
                byok=user in ctx.byok_users,
                subscriptions=ctx.subscriptions.get(user, []),
                balance=ctx.balances.get(user, 0),
                wallet=Wallet(ctx.sources.get(user, []), self.now),
            )
        return found

    def deduct(self, account: _Account, event: UsageEvent, price: Charge) -> tuple[UUID, bool]:
        user = event.user_id
        before = account.balance
        after = account.balance = before - price.credits
        overdraft = account.wallet.take(price.credits)
        row = DeductionRow(  # positional, in its field order (cheaper than keywords)
            self.ids.next(), user, -price.credits, before, after, event.request_id,
            price.vendor_cost, price.margin_multiplier, price.credit_value_usd - price.vendor_cost,
            f"api_{event.request_type}"[:50], "overdraft" if overdraft else "completed",
        )  # fmt: skip
        self.plan.deductions.append(row)
        self.plan.balances[user] = after
        self.plan.alerts.extend(alerts_for(user, event.request_id, before, after, self.low_water))
        return row.id, overdraft > 0


class RandomIds:
    """Version-4 UUIDs from one `os.urandom` read per 256 ids (a read per id costs a
    system call each, the largest single cost of planning a deduction)."""

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def next(self) -> UUID:
        if self._at >= len(self._pool):
            self._pool, self._at = os.urandom(16 * 256), 0
        raw = self._pool[self._at : self._at + 16]
        self._at += 16
        # The version and variant bits set as UUID(bytes=raw, version=4) sets them, a
        # third cheaper than letting UUID do it.
        return UUID(int=int.from_bytes(raw) & _V4_KEEP | _V4_BITS)


_V4_KEEP = ~((0xC000 << 48) | (0xF000 << 64))
_V4_BITS = (0x8000 << 48) | (4 << 76)


def _usage_row(
    event: UsageEvent,
    provider_id: UUID,
    price: Charge,
    tier: str,
    deduction_id: UUID | None,
    fingerprint: bytes,
) -> UsageRow:
    # Positional, in UsageRow's field order: keywords cost a microsecond more per row.
    return UsageRow(
        event.request_id, event.user_id, event.subscription_id, event.model, provider_id,
        event.input_tokens, event.output_tokens, event.cached_input_tokens,
        event.cache_write_tokens, price.vendor_cost, price.margin_multiplier,
        price.credit_value_usd, price.credits, event.request_type, event.streaming_segments,
        event.started_at, event.completed_at, event.processing_time_ms, event.status.value,
        event.error_message, event.is_streaming_complete, tier, event.region, deduction_id,
        fingerprint, event.gateway_cost_usd, price.breakdown,
    )  # fmt: skip


def plan_batch(
    decoded: Sequence[Decoded],
    ctx: BookContext,
    usd_per_credit: Decimal,
    low_water: int,
    now: datetime,
) -> BatchPlan:
    """Decide the fate of every event of a batch, in order."""
    plan = BatchPlan()
    ledger = _Ledger(ctx, now, low_water, plan)
    seen: dict[UUID, bytes] = dict(ctx.booked)
    for position, item in enumerate(decoded):
        outcome = _book_one(position, item, ctx, seen, ledger, usd_per_credit)
        plan.outcomes.append(outcome)
        if outcome.row is not None:
            plan.usage_rows.append(outcome.row)
            seen[outcome.row.request_id] = outcome.row.event_fingerprint
    for account in ledger.accounts.values():
        plan.source_amounts.update(account.wallet.changed)
    return plan


def _book_one(
    position: int,
    item: Decoded,
    ctx: BookContext,
    seen: dict[UUID, bytes],
    ledger: _Ledger,
    usd_per_credit: Decimal,
) -> Outcome:
    def reject(reason: Reason, detail: str) -> Outcome:
        return Outcome(position, OutcomeKind.REJECTED, rejection=Rejection(reason, detail))

    if isinstance(item, Rejection):
        return Outcome(position, OutcomeKind.REJECTED, rejection=item)
    event = item
    fingerprint = event.fingerprint()
    previous = seen.get(event.request_id)
    if previous is not None:
        if previous == fingerprint:
            return Outcome(position, OutcomeKind.DUPLICATE)
        return reject(
            Reason.DUPLICATE_CONFLICT,
            f"request {event.request_id} was already booked with a different payload",
        )
    account = ledger.account(event.user_id)
    if not account.known:
        return reject(Reason.UNKNOWN_USER, f"no user {event.user_id}")
    provider_id = ctx.providers.get(event.provider.lower())
    if provider_id is None:
        return reject(Reason.UNKNOWN_PROVIDER, f"no provider named {event.provider!r}")
    if account.byok:
        row = _usage_row(event, provider_id, FREE_CHARGE, BYOK_TIER, None, fingerprint)
        return Outcome(position, OutcomeKind.BYOK, row=row)
    tier = tier_at(account.subscriptions, event.started_at)
    prices = ctx.prices.get((provider_id, event.model), [])
    cost = price_event(event, provider_id, tier, prices, ctx.margins.resolve, usd_per_credit)
    if isinstance(cost, Rejection):
        return Outcome(position, OutcomeKind.REJECTED, rejection=cost)
    if cost.credits == 0:
        row = _usage_row(event, provider_id, cost, tier, None, fingerprint)
        return Outcome(position, OutcomeKind.FREE, row=row)
    deduction_id, overdraft = ledger.deduct(account, event, cost)
    row = _usage_row(event, provider_id, cost, tier, deduction_id, fingerprint)
    kind = OutcomeKind.OVERDRAFT if overdraft else OutcomeKind.CHARGED
    return Outcome(position, kind, row=row)
