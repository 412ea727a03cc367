"""Booking consumed batches: decode, book in PostgreSQL with retries, dead-letter, alert.

Independent of Faust: the agent hands over raw messages and a `send` function. Nothing
here returns before the batch is either committed or the process is told it cannot be
(`BatchNotBooked`), because the caller acknowledges the offsets right after.

Failures, as data (`pipeline.books.faults` decides by SQLSTATE class):
* a value the schema refuses (classes 22 and 23, but a unique violation): the batch is
  split in halves until the one event that causes it is alone, and that event is
  dead-lettered; if the transaction is refused even with that event set aside (a
  constraint or trigger on what every batch writes), the refusal is ours, as below;
* anything else (the database or the network failed, a request booked by a concurrent
  batch, a privilege or a table missing, a read-only server, Kafka send failed): the whole
  transaction is retried with backoff, and no event is blamed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from pipeline.books import transaction as books
from pipeline.books.faults import blames_the_event
from pipeline.books.offsets import Gap, SkippedRecords, Span, spans
from pipeline.books.reference import ReferenceCache
from pipeline.books.stages import StageClock, timed
from pipeline.core.events import Decoded, Rejection, UsageEvent
from pipeline.core.plan import BatchPlan
from pipeline.core.records import decode_record, is_batch
from pipeline.errors import Reason
from pipeline.stream import outbox
from pipeline.stream.dlq import SourceMessage, dead_letter, to_headers
from pipeline.stream.kafka_io import Send

log = logging.getLogger(__name__)

RETRY_MESSAGE = "batch of %d: retry %d in %.2fs (SQLSTATE %s, not the events' fault): %r"
"""The warning of each retry of a whole transaction; `logged_retries` reads it back."""
_RETRY_LINE = re.compile(
    r"batch of (\d+): retry (\d+) in ([\d.]+)s \(SQLSTATE (\w+), not the events' fault\)"
)

Chunk = tuple[list[SourceMessage], list[Decoded]]
"""One transaction's events: a message each (a batch record's events carry their index)
and its decoded event or rejection."""


def lanes(records: Sequence[SourceMessage], count: int) -> list[list[SourceMessage]]:
    """`records` dealt into at most `count` lanes of whole partitions, each partition's
    records in their order, the heaviest partition first to the lightest lane (by bytes,
    so batch records weigh what they hold).

    A worker books its lanes concurrently: while one lane's transaction waits on
    PostgreSQL, the next is decoded and planned. Lanes share no partition, so no two of
    them race for a partition's booked-up-to offset, and none for a user whose events
    are keyed by user as the contract asks (where they are not, the balance-row locks
    and the unique request ids keep the books right; the loser retries).

    A take without batch records holds at most one transaction's worth of events
    (BATCH_MAX_EVENTS records), so it stays one lane, as it came: splitting it would only
    make smaller transactions (measured: PostgreSQL CPU per event +18%, no gain).
    """
    if count == 1 or not any(is_batch(r.value) for r in records):
        return [list(records)] if records else []
    partitions: dict[tuple[str, int], list[SourceMessage]] = {}
    for record in records:
        partitions.setdefault((record.topic, record.partition), []).append(record)
    weight = {tp: sum(len(r.value or b"") + 1 for r in rs) for tp, rs in partitions.items()}
    loads = [0] * min(count, len(partitions))
    dealt: list[list[SourceMessage]] = [[] for _ in loads]
    for tp in sorted(partitions, key=weight.__getitem__, reverse=True):
        lightest = loads.index(min(loads))
        dealt[lightest].extend(partitions[tp])
        loads[lightest] += weight[tp]
    return dealt


class BatchNotBooked(Exception):
    """The worker is stopping before the batch could be committed."""


@dataclass(frozen=True)
class BookingConfig:
    dlq_topic: str
    alerts_topic: str
    usd_per_credit: Decimal
    low_water: int
    max_future_skew: timedelta
    consumer_group: str
    """Booked-up-to offsets are kept per partition under it (`pipeline.books.offsets`)."""
    max_events: int = 8000
    """Events per transaction (BATCH_MAX_EVENTS); a take of batch records is booked in
    several."""
    max_backoff_seconds: float = 5.0


@dataclass
class BatchResult:
    """What a committed batch did, for metrics and logs."""

    outcomes: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    alerts_published: int = 0
    """Alerts of the outbox published right after the commit (`pipeline.stream.outbox`)."""
    plans: list[BatchPlan] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    """Skipped records found instead of booking: the caller must rewind and restart."""


class Booker:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        send: Send,
        config: BookingConfig,
        clock: StageClock | None = None,
    ) -> None:
        self.pool = pool
        self.send = send
        self.config = config
        self.clock = clock
        """Times the booking stages when set (the stream bench's stage table)."""
        self.stopping = asyncio.Event()
        self.reference = ReferenceCache()

    def chunks(self, records: Sequence[SourceMessage]) -> Iterator[Chunk]:
        """The events of `records` in chunks of at most `max_events` (one transaction
        each), decoded a chunk at a time: a take of batch records is never all decoded in
        memory at once."""
        now = datetime.now(UTC)
        size = self.config.max_events
        events: list[SourceMessage] = []
        decoded: list[Decoded] = []
        unread = iter(records)
        while True:
            with timed(self.clock, "decode"):
                for record in unread:
                    _unpack(record, now, self.config.max_future_skew, events, decoded)
                    if len(events) >= size:
                        break
            if not events:
                return
            yield events[:size], decoded[:size]
            del events[:size], decoded[:size]

    async def book(self, events: list[SourceMessage], decoded: list[Decoded]) -> BatchResult:
        """Book one chunk; returns only once it is committed (or found to follow skipped
        records, see `BatchResult.gaps`)."""
        result = BatchResult()
        await self._book(events, decoded, result)
        if any(p.alerts for p in result.plans):
            try:
                result.alerts_published = await outbox.publish_pending(
                    self.pool, self.send, self.config.alerts_topic
                )
            except Exception as exc:  # committed: the outbox keeps them for the timer
                log.warning("alerts not published after the commit, the timer will: %r", exc)
        return result

    async def _book(
        self, messages: list[SourceMessage], decoded: list[Decoded], result: BatchResult
    ) -> None:
        attempt = 0
        as_taken = decoded
        while True:
            try:
                async with self.pool.connection() as conn:
                    plan = await books.book_batch(
                        conn,
                        decoded,
                        self.config.usd_per_credit,
                        self.config.low_water,
                        lambda plan: self._dead_letter(messages, plan),
                        self._consumed(messages),
                        self.reference,
                        self.clock,
                    )
                _tally(plan, result)
                return
            except SkippedRecords as skipped:
                log.error("records were skipped, not booking the batch: %s", skipped)
                result.gaps.extend(skipped.gaps)
                return
            except (psycopg.Error, PoolTimeout, KafkaSendError) as exc:
                if isinstance(exc, psycopg.Error) and blames_the_event(exc):
                    if any(isinstance(d, UsageEvent) for d in decoded):
                        if len(messages) == 1:
                            decoded = [Rejection(Reason.DATABASE_REJECTED, _one_line(exc))]
                            continue
                        half = len(messages) // 2
                        log.warning("batch of %d refused (%r): splitting", len(messages), exc)
                        await self._book(messages[:half], decoded[:half], result)
                        if not result.gaps:
                            await self._book(messages[half:], decoded[half:], result)
                        return
                    # Refused with no event's value in the transaction (a constraint or
                    # trigger on what every batch writes): no event's fault, and without
                    # this a lone event would be set aside and retried in a loop, no backoff.
                    decoded = as_taken
                attempt += 1
                result.retries += 1
                delay = min(self.config.max_backoff_seconds, 0.05 * 2**attempt)
                sqlstate = getattr(exc, "sqlstate", None)
                log.warning(RETRY_MESSAGE, len(messages), attempt, delay, sqlstate, exc)
                if self.stopping.is_set():
                    raise BatchNotBooked(str(exc)) from exc
                await asyncio.sleep(delay * (0.5 + random.random()))

    def _consumed(self, messages: list[SourceMessage]) -> tuple[str, list[Span]]:
        return self.config.consumer_group, spans((m.topic, m.partition, m.offset) for m in messages)

    async def _dead_letter(self, messages: list[SourceMessage], plan: BatchPlan) -> None:
        at = datetime.now(UTC)
        sends = []
        for position, rejection in plan.rejections():
            letter = dead_letter(messages[position], rejection.reason, rejection.detail, at)
            sends.append(
                self.send(
                    self.config.dlq_topic, letter.key, letter.value or b"", to_headers(letter)
                )
            )
        try:
            await asyncio.gather(*sends)
        except Exception as exc:
            raise KafkaSendError(repr(exc)) from exc


@dataclass(frozen=True, slots=True)
class LoggedRetry:
    """One `RETRY_MESSAGE` found in a worker's log."""

    events: int
    attempt: int
    delay: float
    """Seconds before the attempt, before jitter."""
    sqlstate: str
    """"None" when the error had none (the driver's own, a pool timeout, a Kafka send)."""


def logged_retries(text: str) -> list[LoggedRetry]:
    """The retries a worker logged in `text`, in order (any log format: the message is
    matched wherever it stands in a line)."""
    return [
        LoggedRetry(int(events), int(attempt), float(delay), sqlstate)
        for events, attempt, delay, sqlstate in _RETRY_LINE.findall(text)
    ]


class KafkaSendError(Exception):
    """A dead-letter record could not be published; the batch is retried."""


def _unpack(
    record: SourceMessage,
    now: datetime,
    max_future_skew: timedelta,
    events: list[SourceMessage],
    decoded: list[Decoded],
) -> None:
    """Append a message and a decoded item per event of `record`; a batch record's events
    share its record, each with its index."""
    for index, item in decode_record(record.value, now, max_future_skew):
        events.append(record if index is None else record._replace(batch_index=index))
        decoded.append(item)


def _tally(plan: BatchPlan, result: BatchResult) -> None:
    result.plans.append(plan)
    for outcome in plan.outcomes:
        result.outcomes[outcome.kind] = result.outcomes.get(outcome.kind, 0) + 1
        if outcome.rejection is not None:
            reason = outcome.rejection.reason.value
            result.rejected[reason] = result.rejected.get(reason, 0) + 1


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:500]
