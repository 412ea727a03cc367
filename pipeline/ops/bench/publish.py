"""Publishing the bench stream, at a fixed rate (token bucket) or as fast as possible.

Every record gets an explicit Kafka timestamp, taken when it is handed to the producer:
that is the publish time latencies are measured from. (aiokafka's send results carry a
timestamp too, but for a CreateTime topic it repeats the first record's time for every
record of a producer batch.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from aiokafka import AIOKafkaProducer

from pipeline.ops.bench.traffic import Stream

TICK_SECONDS = 0.002
SETTLE_EVERY = 5000


@dataclass(frozen=True)
class Published:
    timestamps_ms: list[int]
    """Kafka timestamp of each record, in stream order."""
    seconds: float
    """From the first send to the last broker ack."""

    @property
    def achieved_rate(self) -> float:
        return len(self.timestamps_ms) / self.seconds if self.seconds > 0 else 0.0


def first_publish_ms(
    stream: Stream, published: Published, groups: Sequence[Sequence[int]] | None = None
) -> dict[UUID, int]:
    """request_id -> the Kafka timestamp of its first delivery. `groups[i]` are the stream
    positions record i carried (batch records); by default one record per position."""
    first: dict[UUID, int] = {}
    records = groups if groups is not None else [[i] for i in range(len(stream.lines))]
    for group, stamp in zip(records, published.timestamps_ms, strict=True):
        for position in group:
            request_id = stream.request_ids[position]
            if request_id is not None and stamp < first.get(request_id, stamp + 1):
                first[request_id] = stamp
    return first


async def publish(
    bootstrap: str,
    topic: str,
    lines: Sequence[bytes],
    keys: Sequence[bytes | None],
    rate: float | None,
) -> Published:
    """Publish every record, `rate` records per second (None: as fast as possible), and
    wait for every ack."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=1 << 20
    )
    await producer.start()
    stamps: list[int] = []
    pending: list[asyncio.Future[object]] = []
    try:
        began = time.monotonic()
        sent = 0
        while sent < len(lines):
            if rate is None:
                due = min(len(lines), sent + SETTLE_EVERY)
            else:
                due = min(len(lines), int((time.monotonic() - began) * rate) + 1)
                if due <= sent:
                    await asyncio.sleep(TICK_SECONDS)
                    continue
            for i in range(sent, due):
                stamp = time.time_ns() // 1_000_000
                pending.append(
                    await producer.send(topic, lines[i], key=keys[i], timestamp_ms=stamp)
                )
                stamps.append(stamp)
            sent = due
            if rate is None:
                # Bounded in-flight futures; the sender task runs meanwhile.
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        seconds = time.monotonic() - began
    finally:
        await producer.stop()
    return Published(stamps, seconds)
