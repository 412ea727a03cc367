"""The worker's timers: alerts left in the outbox, credit expiry (every worker), the
consumer lag gauge and the count of prices overdue for verification. Each one logs a
failure and tries again on its next tick."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import faust
import psycopg
from psycopg_pool import AsyncConnectionPool

from pipeline.money.movements import expire
from pipeline.money.verification import STALE_COUNT
from pipeline.settings import Settings
from pipeline.stream import outbox
from pipeline.stream.booker import Booker
from pipeline.stream.metrics import Metrics, consumer_lag, set_lag

log = logging.getLogger(__name__)

ALERT_INTERVAL_SECONDS = 5.0
LAG_INTERVAL_SECONDS = 5.0
STALE_PRICES_INTERVAL_SECONDS = 60.0


def install(
    app: faust.App,
    usage: faust.TopicT,
    booker: Booker,
    metrics: Metrics,
    database_url: str,
    settings: Settings,
) -> None:
    @app.timer(interval=ALERT_INTERVAL_SECONDS)  # type: ignore[untyped-decorator]
    async def flush_alerts() -> None:
        try:
            published = await outbox.publish_pending(
                booker.pool, booker.send, settings.alerts_topic
            )
            metrics.alerts_published.inc(published)
        except Exception as exc:  # the outbox keeps them; next tick retries
            metrics.db_errors.labels("alert_outbox").inc()
            log.warning("alert publishing failed, will retry: %r", exc)

    @app.timer(interval=settings.expiry_interval_seconds)  # type: ignore[untyped-decorator]
    async def expire_credits() -> None:
        try:
            expired = await asyncio.to_thread(_expire_now, database_url)
        except Exception as exc:  # nothing changed for the failed user; next tick retries
            metrics.db_errors.labels("expiry").inc()
            log.warning("credit expiry failed, will retry: %r", exc)
            return
        if expired:
            log.info("expired %d credits", expired)

    @app.timer(interval=STALE_PRICES_INTERVAL_SECONDS)  # type: ignore[untyped-decorator]
    async def stale_prices() -> None:
        try:
            metrics.prices_stale.set(await count_stale_prices(booker.pool))
        except Exception as exc:  # the gauge keeps its last count; next tick retries
            metrics.db_errors.labels("stale_prices").inc()
            log.warning("counting stale prices failed, will retry: %r", exc)

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


async def count_stale_prices(pool: AsyncConnectionPool) -> int:
    """How many prices in effect now are overdue for verification."""
    async with pool.connection() as conn:
        cur = await conn.execute(STALE_COUNT, {"at": datetime.now(UTC)})
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


def _expire_now(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        return expire(conn, datetime.now(UTC))
