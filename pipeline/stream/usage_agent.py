"""The usage agent: a thin shell around `booker.Booker`.

Take batches of records, gather them in a `Backlog` while the booking before them is in
flight, deal what waits into lanes of whole partitions, book each lane a transaction's
worth at a time (the lanes concurrently), record what each transaction did in the metrics
and the live view, and let Faust acknowledge the offsets only once the records are
committed in PostgreSQL (each message is held by a reference of our own until
then: a stopping Faust acknowledges a take it closes, booked or not). A batch that cannot
be committed must never be acknowledged, so on any failure to book it the process stops at
once without committing offsets; the next start redelivers the batch and the idempotent
books absorb it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, NoReturn, Protocol

import faust
from faust.types import TP, EventT

from pipeline.books import offsets
from pipeline.books.offsets import Gap
from pipeline.core.events import Decoded
from pipeline.settings import Settings
from pipeline.stream import heap, logs
from pipeline.stream.booker import BatchResult, Booker, lanes
from pipeline.stream.dlq import SourceMessage
from pipeline.stream.live_view import LiveUsage
from pipeline.stream.metrics import Metrics, observe_batch
from pipeline.stream.refetch import Activity

log = logging.getLogger(__name__)

EXIT_BATCH_NOT_BOOKED = 70
SHUTDOWN_GRACE_SECONDS = 30.0


def takes(
    settings: Settings, stream: faust.StreamT[bytes]
) -> AsyncIterator[Sequence[EventT[bytes]]]:
    """The stream in takes of up to BATCH_MAX_EVENTS records or BATCH_MAX_WAIT_MS."""
    batches: AsyncIterator[Sequence[EventT[bytes]]] = stream.take_events(  # type: ignore[attr-defined]
        settings.batch_max_events, within=settings.batch_max_wait_ms / 1000
    )
    return batches


def install(
    app: faust.App,
    usage: faust.TopicT,
    outputs: list[faust.TopicT],
    booker: Booker,
    metrics: Metrics,
    live: LiveUsage | None,
    settings: Settings,
    activity: Activity,
) -> None:
    @app.agent(usage)
    async def book_usage(stream: faust.StreamT[bytes]) -> None:
        for topic in outputs:
            await topic.maybe_declare()
        await booker.pool.open(wait=False)
        heap.spare_startup_heap()
        backlog = Backlog(settings.batch_max_events)
        booking = asyncio.ensure_future(book_backlog(backlog))
        try:
            async for taken in takes(settings, stream):
                activity.started += 1
                _hold(taken)
                await backlog.add(taken, sum(len(e.message.value or b"") for e in taken))
        finally:
            # What waits in the backlog stays held, so it is never acknowledged; a
            # booking in flight gets the grace of `_book_or_die`.
            booking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await booking

    async def book_backlog(backlog: Backlog) -> NoReturn:
        while True:
            taken, count = await backlog.next()
            try:
                records = [_source(e) for e in taken]
                await asyncio.gather(*map(book_lane, lanes(records, settings.booking_lanes)))
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # a fault of ours: stop before acknowledging
                _die(f"booking {len(taken)} records failed: {exc!r}")
            _release(app, taken)
            activity.finished += count

    async def book_lane(records: list[SourceMessage]) -> None:
        for events, decoded in booker.chunks(records):
            started = time.monotonic()
            result = await _book_or_die(booker, events, decoded)
            if result.gaps:
                await _rewind_and_die(app, booker, result.gaps)
            observe_batch(metrics, result, events, time.monotonic() - started, time.time())
            logs.log_rejected(log, result, events)
            if live is not None:
                live.record(result, events)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def _stopping(app: faust.App, **kwargs: Any) -> None:
        booker.stopping.set()


class Backlog:
    """Takes waiting to be booked. The agent adds each take as Faust hands it over; the
    booking loop books everything waiting, in order, as the next transactions.

    While one booking waits on PostgreSQL, Faust goes on reading and the takes that come
    meanwhile gather here, so the size of a booking follows the backlog: a worker behind
    books thousands of events per transaction (each transaction's fixed work spread over
    them), a quiet stream books each take as it comes, with no wait added. The agent
    holds Faust back once `limit` records wait, or as many bytes as `limit` events of
    ~1 KiB (batch records weigh what they hold), plus the take it is adding.
    """

    EVENT_BYTES = 1024
    """A generous single event: bounds the bytes waiting at `limit` of them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._events: list[EventT[bytes]] = []
        self._bytes = 0
        self._takes = 0
        self._changed = asyncio.Event()

    async def add(self, taken: Sequence[EventT[bytes]], size: int) -> None:
        """Queue a take of `size` bytes (its records' values)."""
        while len(self._events) >= self.limit or self._bytes >= self.limit * self.EVENT_BYTES:
            await self._wait()
        self._events.extend(taken)
        self._bytes += size
        self._takes += 1
        self._changed.set()

    async def next(self) -> tuple[list[EventT[bytes]], int]:
        """Everything waiting, and how many takes it was; waits for one if none is."""
        while not self._events:
            await self._wait()
        taken, count = self._events, self._takes
        self._events, self._bytes, self._takes = [], 0, 0
        self._changed.set()
        return taken, count

    async def _wait(self) -> None:
        self._changed.clear()
        await self._changed.wait()


def _hold(taken: Sequence[EventT[bytes]]) -> None:
    """Take a reference on each message of the take until `_release`, once it is booked.

    Faust acknowledges a take when its generator is closed, and a stopping worker closes
    it (`Stream.on_stop`) while the take may still be booking; the consumer then commits
    those offsets. With this reference held, that acknowledgement is not the last one, so
    a take the worker exits 70 on stays unacknowledged.
    """
    for event in taken:
        event.message.incref()


def _release(app: faust.App, taken: Sequence[EventT[bytes]]) -> None:
    """Let go of `_hold`'s references: the last acknowledgement marks the offset safe."""
    for event in taken:
        event.message.ack(app.consumer)


def _source(event: faust.EventT[bytes]) -> SourceMessage:
    message = event.message
    return SourceMessage(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        timestamp_ms=int(message.timestamp * 1000) if message.timestamp else None,
    )


async def _book_or_die(
    booker: Booker, messages: list[SourceMessage], decoded: list[Decoded]
) -> BatchResult:
    """Book the batch; if that cannot happen, exit before Faust acknowledges it."""
    task = asyncio.ensure_future(booker.book(messages, decoded))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        booker.stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), SHUTDOWN_GRACE_SECONDS)
        except BaseException as exc:
            _die(f"stopping with an unbooked batch of {len(messages)}: {exc!r}")
        raise
    except BaseException as exc:
        _die(f"batch of {len(messages)} could not be booked: {exc!r}")


async def _rewind_and_die(app: faust.App, booker: Booker, gaps: list[Gap]) -> NoReturn:
    """Commit the group back to the first skipped record, remember the rewind in the
    books, then stop unacknowledged.

    The rewind is remembered only once the commit took: a range still skipped right after
    a rewind is taken to hold no records (`offsets.find_gaps`), so a rewind marked but not
    committed would book past the skipped records for good. Not committed, the next start
    refuses the same batch and rewinds again.
    """
    where = {TP(g.topic, g.partition): g.expected for g in gaps}
    if not await rewind(app.consumer, where):  # type: ignore[arg-type]
        _die(f"records were skipped; rewinding to {where} was not committed")
    try:
        async with booker.pool.connection() as conn:
            await offsets.mark_rewound(conn, booker.config.consumer_group, gaps)
    except Exception as exc:  # the next start finds the gap again and rewinds again
        log.error("the rewind to %s was not recorded in the books: %r", where, exc)
    _die(f"records were skipped; rewound {where}")


class Committer(Protocol):
    """What the rewind uses of Faust's consumer."""

    def assignment(self) -> set[TP]: ...

    async def _commit(self, offsets: dict[TP, int]) -> bool: ...


async def rewind(consumer: Committer, where: dict[TP, int]) -> bool:
    """Commit the group's offsets back to `where`; whether that took.

    Faust acknowledges only forward, so this is a direct offset commit (the transport's
    `_commit`), which leaves out partitions no longer assigned (so they are checked before
    and after) and returns False, no exception, when the group rebalanced meanwhile.
    """
    if not set(where) <= consumer.assignment():
        return False
    try:
        took = await consumer._commit(where)
    except Exception as exc:
        log.error("rewinding %s failed: %r", where, exc)
        return False
    return took and set(where) <= consumer.assignment()  # not revoked while committing


def _die(why: str) -> NoReturn:
    log.critical("%s; exiting without acknowledging it (it will be redelivered)", why)
    logging.shutdown()
    os._exit(EXIT_BATCH_NOT_BOOKED)
