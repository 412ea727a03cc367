"""Credit alerts from the outbox to Kafka: the one place that publishes them.

The books write each alert into `credit_alert_outbox` in the transaction of the batch that
raised it; the booker publishes the pending ones right after such a commit, and the
worker's timer every few seconds publishes what is still pending (a publish that failed,
a batch of a worker that died). Rows are claimed with `SKIP LOCKED`, so two workers never
publish the same row at the same moment; a crash between the send and the mark publishes
an alert again, which its `alert_id` lets a gateway recognise.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from psycopg_pool import AsyncConnectionPool

from pipeline.stream.kafka_io import Send


async def publish_pending(pool: AsyncConnectionPool, send: Send, topic: str) -> int:
    """Publish up to 1,000 pending alerts of the outbox; returns how many."""
    async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        await cur.execute(
            """
            SELECT id, user_id, kind, balance, low_water, request_id, created_at
            FROM credit_alert_outbox WHERE published_at IS NULL
            ORDER BY created_at LIMIT 1000 FOR UPDATE SKIP LOCKED
            """
        )
        rows = await cur.fetchall()
        if not rows:
            return 0
        await asyncio.gather(*(send(topic, str(r[1]).encode(), alert_value(r), []) for r in rows))
        await cur.execute(
            "UPDATE credit_alert_outbox SET published_at = now() WHERE id = ANY(%s)",
            ([r[0] for r in rows],),
        )
    return len(rows)


def alert_value(row: tuple[Any, ...]) -> bytes:
    """An outbox row as the JSON value of its `credit.alerts` record."""
    alert_id, user_id, kind, balance, low_water, request_id, created_at = row
    return json.dumps(
        {
            "alert_id": str(alert_id),
            "user_id": str(user_id),
            "kind": kind,
            "balance": balance,
            "low_water": low_water,
            "request_id": str(request_id) if request_id else None,
            "created_at": created_at.isoformat(),
        }
    ).encode()
