"""The Faust app: topics, the usage agent and the alert publisher, built from settings.

The agent is a thin shell: take a batch of records, hand its events to
`pipeline.consume.Booker` a transaction's worth at a time, record
what it did in `pipeline.metrics` (served on the web port at `/metrics`), and let
Faust acknowledge the offsets only once the batch is committed in PostgreSQL. A batch
that cannot be committed must never be acknowledged, so on any failure to book it the
process stops at once without committing offsets; the next start redelivers the batch
and the idempotent books absorb it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import faust
import psycopg
from faust.types import TP, EventT
from psycopg_pool import AsyncConnectionPool

from agents.live import install_live_view
from pipeline import heap, logs
from pipeline.consume import BatchResult, Booker, BookingConfig, lanes
from pipeline.dlq import SourceMessage
from pipeline.events import Decoded
from pipeline.metrics import CONTENT_TYPE, consumer_lag, new_metrics, observe_batch, set_lag
from pipeline.movements import expire
from pipeline.offsets import Gap
from pipeline.settings import Settings

log = logging.getLogger(__name__)

EXIT_BATCH_NOT_BOOKED = 70
SHUTDOWN_GRACE_SECONDS = 30.0
LAG_INTERVAL_SECONDS = 5.0
FETCH_BYTES_PER_PARTITION = 8 * 1024 * 1024
METADATA_MAX_AGE_MS = 10_000


def new_app(settings: Settings, bootstrap: str) -> tuple[faust.App, faust.TopicT]:
    """The Faust app with the worker's settings, and its usage topic (no agents yet)."""
    app = faust.App(
        settings.worker_id,
        broker=f"kafka://{bootstrap}",
        datadir=str(settings.state_dir / "faust" / settings.worker_id),
        store="memory://",
        topic_partitions=settings.topic_partitions,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        web_bind=settings.worker_web_bind,
        web_port=settings.worker_web_port,
        web_in_thread=False,
        stream_wait_empty=False,
        broker_commit_every=10_000,
        broker_commit_interval=1.0,
        # Faust's default 1 MiB per partition per fetch caps a worker near 4.7k events/s
        # here; 8 MiB lets the fetcher keep ahead of the books (docs/benchmarks.md).
        consumer_max_fetch_size=FETCH_BYTES_PER_PARTITION,
        # A worker that joins while the broker restarts can find the usage topic missing
        # from its metadata ("Ignoring missing topic") and then idles until the next
        # metadata refresh: aiokafka's default of 5 minutes stalled a chaos drill for 150 s.
        consumer_metadata_max_age_ms=METADATA_MAX_AGE_MS,
        stream_buffer_maxsize=settings.stream_buffer_records,
        logging_config=logs.logging_config(settings.log_format),
    )
    usage = app.topic(
        settings.usage_topic,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.topic_partitions,
    )
    return app, usage


def takes(
    settings: Settings, stream: faust.StreamT[bytes]
) -> AsyncIterator[Sequence[EventT[bytes]]]:
    """The stream in takes of up to BATCH_MAX_EVENTS records or BATCH_MAX_WAIT_MS."""
    batches: AsyncIterator[Sequence[EventT[bytes]]] = stream.take_events(  # type: ignore[attr-defined]
        settings.batch_max_events, within=settings.batch_max_wait_ms / 1000
    )
    return batches


def create_app(settings: Settings, database_url: str, bootstrap: str) -> faust.App:
    app, usage = new_app(settings, bootstrap)
    outputs = [
        app.topic(name, key_type=bytes, value_type=bytes, partitions=1)
        for name in (settings.dlq_topic, settings.alerts_topic)
    ]

    live = install_live_view(app, usage) if settings.live_usage_view else None
    # A connection per lane, one for the alert outbox and one spare.
    pool = AsyncConnectionPool(
        database_url, open=False, min_size=1, max_size=settings.booking_lanes + 2
    )

    async def send(topic: str, key: bytes | None, value: bytes, headers: list[Any]) -> None:
        await app.producer.send_and_wait(topic, key, value, None, None, headers)

    booker = Booker(
        pool,
        send,
        BookingConfig(
            dlq_topic=settings.dlq_topic,
            alerts_topic=settings.alerts_topic,
            usd_per_credit=settings.usd_per_credit,
            low_water=settings.low_balance_credits,
            max_future_skew=timedelta(seconds=settings.max_future_skew_seconds),
            consumer_group=settings.worker_id,
            max_events=settings.batch_max_events,
        ),
    )
    app.booker = booker  # type: ignore[attr-defined]
    metrics = new_metrics()
    app.metrics = metrics  # type: ignore[attr-defined]

    @app.page("/metrics")
    async def metrics_page(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return view.bytes(metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    @app.agent(usage)
    async def book_usage(stream: faust.StreamT[bytes]) -> None:
        for topic in outputs:
            await topic.maybe_declare()
        await pool.open(wait=False)
        heap.spare_startup_heap()
        async for taken in takes(settings, stream):
            records = [_source(e) for e in taken]
            await asyncio.gather(*map(book_lane, lanes(records, settings.booking_lanes)))

    async def book_lane(records: list[SourceMessage]) -> None:
        for events, decoded in booker.chunks(records):
            started = time.monotonic()
            result = await _book_or_die(booker, events, decoded)
            if result.gaps:
                await _rewind_and_die(app, result.gaps)
            observe_batch(metrics, result, events, time.monotonic() - started, time.time())
            logs.log_rejected(log, result, events)
            if live is not None:
                live.record(result, events)

    @app.timer(interval=5.0)  # type: ignore[untyped-decorator]
    async def flush_alerts() -> None:
        try:
            metrics.alerts_published.inc(await booker.publish_alerts())
        except Exception as exc:  # the outbox keeps them; next tick retries
            metrics.db_errors.labels("alert_outbox").inc()
            log.warning("alert publishing failed, will retry: %r", exc)

    @app.timer(interval=settings.expiry_interval_seconds, on_leader=True)  # type: ignore[untyped-decorator]
    async def expire_credits() -> None:
        try:
            expired = await asyncio.to_thread(_expire_now, database_url)
        except Exception as exc:  # nothing changed for the failed user; next tick retries
            metrics.db_errors.labels("expiry").inc()
            log.warning("credit expiry failed, will retry: %r", exc)
            return
        if expired:
            log.info("expired %d credits", expired)

    @app.timer(interval=LAG_INTERVAL_SECONDS)  # type: ignore[untyped-decorator]
    async def measure_lag() -> None:
        try:
            partitions = [
                tp for tp in app.consumer.assignment() if tp.topic == usage.get_topic_name()
            ]
            highwaters = {(tp.topic, tp.partition): app.consumer.highwater(tp) for tp in partitions}
        except Exception as exc:  # not started or rebalancing; the next tick measures
            log.debug("consumer lag not measured: %r", exc)
            return
        committed = app.monitor.tp_committed_offsets
        done = {(tp.topic, tp.partition): committed.get(tp) for tp in partitions}
        set_lag(metrics, consumer_lag(highwaters, done))

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def _stopping(app: faust.App, **kwargs: Any) -> None:
        booker.stopping.set()

    return app


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


def _expire_now(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        return expire(conn, datetime.now(UTC))


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


async def _rewind_and_die(app: faust.App, gaps: list[Gap]) -> NoReturn:
    """Commit the group back to the first skipped record, then stop unacknowledged.

    Faust acknowledges only forward, so the rewind is a direct offset commit (the
    transport's `_commit`), and the restart reads from there.
    """
    rewind = {TP(g.topic, g.partition): g.expected for g in gaps}
    try:
        await app.consumer._commit(rewind)  # type: ignore[attr-defined]
    except Exception as exc:  # the recorded offsets still refuse the batch next time
        log.error("rewinding %s failed: %r", rewind, exc)
    _die(f"records were skipped; rewound {rewind}")


def _die(why: str) -> NoReturn:
    log.critical("%s; exiting without acknowledging it (it will be redelivered)", why)
    logging.shutdown()
    os._exit(EXIT_BATCH_NOT_BOOKED)
