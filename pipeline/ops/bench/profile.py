"""The booking stages of the worker, measured in-process on the bench stream.

The stream's records are handed to the worker's own `Booker` (a fresh copy of the
template database, a real producer for the dead letters) in transactions of as many
records as the worker's averaged while it drained the same stream (runner b; its backlog
sets them, up to BATCH_MAX_EVENTS), with a `StageClock`. Nothing else runs in the
process, so each stage's thread CPU is exact; Faust's part is runner (e)'s.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from psycopg_pool import AsyncConnectionPool

from pipeline.books.stages import StageClock, per_event
from pipeline.core.records import partition_of
from pipeline.ops.bench.bench_stack import BenchStack
from pipeline.ops.bench.traffic import Stream
from pipeline.stream import event_loop, heap
from pipeline.stream.booker import Booker, BookingConfig
from pipeline.stream.dlq import SourceMessage


def booking_stages(
    stack: BenchStack,
    stream: Stream,
    dlq_topic: str,
    tag: str,
    transaction_events: float | None = None,
) -> dict[str, float]:
    """Microseconds per unique valid event, per stage (`pipeline.books.stages.per_event`),
    booked in transactions of `transaction_events` records (BATCH_MAX_EVENTS if None)."""
    name = f"bench_stages_{tag}"
    database = stack.database(name)
    size = max(1, round(transaction_events or stack.settings.batch_max_events))
    try:
        clock = event_loop.run(
            stack.settings, _book_all(stack, database, stream, dlq_topic, tag, size)
        )
    finally:
        stack.drop(name)
    return per_event(clock, stream.unique_valid)


async def _book_all(
    stack: BenchStack, database: str, stream: Stream, dlq_topic: str, tag: str, size: int
) -> StageClock:
    settings = stack.settings
    clock = StageClock()
    heap.spare_startup_heap()  # as the worker does
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
    await producer.start()

    async def send(topic: str, key: bytes | None, value: bytes, headers: list[Any]) -> None:
        await producer.send_and_wait(topic, value, key=key, headers=headers)

    config = BookingConfig(
        dlq_topic=dlq_topic,
        alerts_topic=f"{dlq_topic}.alerts",
        usd_per_credit=settings.usd_per_credit,
        low_water=settings.low_balance_credits,
        max_future_skew=timedelta(seconds=settings.max_future_skew_seconds),
        consumer_group=f"bench-stages-{tag}",
        max_events=size,
    )
    try:
        async with AsyncConnectionPool(database, min_size=1, max_size=1, open=False) as pool:
            booker = Booker(pool, send, config, clock)
            records = _records(stream, settings.topic_partitions)
            for start in range(0, len(records), size):
                for events, decoded in booker.chunks(records[start : start + size]):
                    await booker.book(events, decoded)
    finally:
        await producer.stop()
    return clock


def _records(stream: Stream, partitions: int) -> list[SourceMessage]:
    """The stream as consumed records: each on its key's partition, offsets in order."""
    offsets = [0] * partitions
    records = []
    for key, value in zip(stream.keys, stream.lines, strict=True):
        partition = partition_of(key, partitions) if key is not None else 0
        records.append(SourceMessage("bench", partition, offsets[partition], key, value))
        offsets[partition] += 1
    return records
