"""The baseline (a) and bare (d) consumers, each run as its own process so the bench can
measure its CPU and memory like the worker's.

    python -m pipeline.ops.bench.consumers baseline|bare --bootstrap B --topic T --group G
        [--database URL] [--usd-per-credit X] [--max-future-skew S] [--max-seconds S]

Each joins its own consumer group, reads the topic from the beginning up to the end
offsets it finds once assigned (the bench publishes the whole stream first), commits its
offsets after every fetched batch, and prints one JSON line: records read, when its
partitions were assigned, when the first and the last batch arrived, what it booked and
the publish-to-receipt latencies. The baseline may be given a time budget: it then stops
before the next event, and its ledger holds exactly the valid events it booked.
`--connections N` keeps N of its per-request transactions in flight from a pool of N.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from psycopg_pool import AsyncConnectionPool

from pipeline.core.events import UsageEvent, decode
from pipeline.core.pricing import Charge
from pipeline.ops.bench import baseline
from pipeline.ops.bench.stats import latency_summary

FETCH_BYTES_PER_PARTITION = 8 << 20
"""The same per-partition fetch size as the worker's."""

Handler = Callable[[list[ConsumerRecord[bytes, bytes]]], Awaitable[bool]]
"""Handles a fetched batch; False: the time budget is spent, stop here."""


async def drain(bootstrap: str, topic: str, group: str, handle: Handler) -> dict[str, Any]:
    """Consume `topic` up to its end offsets, handing each fetched batch to `handle`."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=FETCH_BYTES_PER_PARTITION,
    )
    assigned: list[float] = []
    consumer.subscribe([topic], listener=_Assigned(assigned))
    await consumer.start()
    records = 0
    first = last = None
    latencies: list[float] = []
    try:
        ends: dict[TopicPartition, int] = {}
        done: dict[TopicPartition, int] = {}
        while not ends or any(done.get(tp, 0) < end for tp, end in ends.items()):
            batch = await consumer.getmany(timeout_ms=500)
            if not ends and consumer.assignment():
                ends = await consumer.end_offsets(list(consumer.assignment()))
            received = time.time()
            for tp, messages in batch.items():
                if not messages:
                    continue
                first = first if first is not None else received
                records += len(messages)
                latencies += [received * 1000 - m.timestamp for m in messages]
                if not await handle(messages):
                    return _result(records, assigned, first, time.time(), latencies)
                done[tp] = messages[-1].offset + 1
            if batch:
                last = time.time()
                await consumer.commit()
    finally:
        await consumer.stop()
    return _result(records, assigned, first, last, latencies)


def _result(
    records: int, assigned: list[float], first: float | None, last: float | None,
    latencies: list[float],
) -> dict[str, Any]:  # fmt: skip
    return {
        "records": records,
        "assigned": assigned[-1] if assigned else None,
        "first_receipt": first,
        "last_receipt": last,
        "receipt_latency": latency_summary(latencies),
    }


class _Assigned(ConsumerRebalanceListener):  # type: ignore[misc]
    """Notes when the group gave this consumer its partitions: fetching starts then."""

    def __init__(self, times: list[float]) -> None:
        self.times = times

    def on_partitions_revoked(self, revoked: object) -> None:
        del revoked

    def on_partitions_assigned(self, assigned: object) -> None:
        del assigned
        self.times.append(time.time())


async def run_bare(args: argparse.Namespace) -> dict[str, Any]:
    async def handle(messages: list[ConsumerRecord[bytes, bytes]]) -> bool:
        del messages
        return True

    return await drain(args.bootstrap, args.topic, args.group, handle)


async def run_baseline(args: argparse.Namespace) -> dict[str, Any]:
    """The seed's per-request transactions, `--connections` of them in flight at once
    (one: the plain baseline; the seed's pool formula gives 20)."""
    usd_per_credit = Decimal(args.usd_per_credit)
    skew = timedelta(seconds=args.max_future_skew)
    counts = {"booked": 0, "duplicates": 0, "rejected": 0, "stopped_early": 0}
    stop_at = time.monotonic() + args.max_seconds if args.max_seconds > 0 else None
    # Autocommit: each `conn.transaction()` is then a real transaction, not a savepoint.
    async with AsyncConnectionPool(
        args.database,
        min_size=args.connections,
        max_size=args.connections,
        kwargs={"autocommit": True},
        open=False,
    ) as pool:
        await pool.wait()
        async with pool.connection() as conn:
            ref = await baseline.load_reference(conn)
        in_flight = asyncio.Semaphore(args.connections)

        async def book(event: UsageEvent, cost: Charge) -> None:
            try:
                async with pool.connection() as conn:
                    booked = await baseline.book_one(conn, ref, event, cost)
                counts["booked" if booked else "duplicates"] += 1
            finally:
                in_flight.release()

        async def handle(messages: list[ConsumerRecord[bytes, bytes]]) -> bool:
            tasks = []
            try:
                for message in messages:
                    await in_flight.acquire()
                    if stop_at is not None and time.monotonic() > stop_at:
                        in_flight.release()
                        counts["stopped_early"] = 1
                        return False
                    event = decode(message.value, datetime.now(UTC), skew)
                    cost = (
                        baseline.price_event(ref, event, usd_per_credit)
                        if isinstance(event, UsageEvent)
                        else None
                    )
                    if not isinstance(event, UsageEvent) or cost is None:
                        counts["rejected"] += 1
                        in_flight.release()
                        continue
                    tasks.append(asyncio.create_task(book(event, cost)))
                return True
            finally:
                await asyncio.gather(*tasks)

        result = await drain(args.bootstrap, args.topic, args.group, handle)
    return result | counts


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.ops.bench.consumers")
    parser.add_argument("kind", choices=("baseline", "bare"))
    parser.add_argument(
        "--connections", type=int, default=1, help="baseline: transactions in flight"
    )
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--database")
    parser.add_argument("--usd-per-credit", default="0.001")
    parser.add_argument("--max-future-skew", type=int, default=300)
    parser.add_argument(
        "--max-seconds", type=float, default=0, help="baseline: stop after this long (0: never)"
    )
    args = parser.parse_args(argv)
    if args.kind == "baseline" and not args.database:
        parser.error("baseline needs --database")
    run = run_baseline if args.kind == "baseline" else run_bare
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
