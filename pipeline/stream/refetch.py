"""Read again what Faust fetched but never handed to the usage agent.

faust-streaming stops the consumer's flow while it rebalances and recovers its tables, and
drops what its fetcher hands over meanwhile (`Consumer._drain_messages` gives a message up
when `suspend_flow` fires and still moves its read offset past it; a rebalance also clears
the streams' queues). It relies on seeking every partition back to its committed offset
once recovery is done (`Recovery.on_recovery_completed` -> `Consumer.perform_seek`), but
aiokafka's `seek_to_committed` seeks only to a committed offset above 0, so on a partition
the group has not committed yet the dropped records stay skipped. With the live view's
table on, a worker restarted after kill -9 before its first offset commit booked nothing
more in 9 of 33 restarts (issue 16). Records after such a hole reveal it to the booked
offsets (`pipeline.books.offsets` rewinds the group and restarts), but the last records of
a stream wait for a later one that may never come.

So a timer compares, while the agent is idle, each usage partition's fetch position with
where the books say its next record is (`consumer_offsets`; the partition's first offset
if the group never booked from it). A partition ahead of its books on two ticks in a row,
with nothing taken in between, holds fetched records that never reached the agent: it is
sought back there with Faust's `Consumer.seek`. A range that is still ahead after one such
seek holds no records (transaction markers, say) and is left alone.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import faust
from faust.types import TP
from psycopg_pool import AsyncConnectionPool

from pipeline.books import offsets

log = logging.getLogger(__name__)

CHECK_INTERVAL_SECONDS = 0.5
POSITION_TIMEOUT_SECONDS = 5.0

Ahead = tuple[int, int]
"""A partition's fetch position and where its books say the next record is."""


@dataclass
class Activity:
    """What the usage agent has taken so far; it counts each take as it starts and ends."""

    started: int = 0
    finished: int = 0


def to_seek(
    now: dict[TP, Ahead], before: dict[TP, Ahead], sought: dict[TP, Ahead]
) -> dict[TP, int]:
    """The partitions ahead of their books now and, unchanged, on the tick before (and
    not sought from there already), each with the offset to seek it to."""
    return {
        tp: booked
        for tp, (fetched, booked) in now.items()
        if fetched > booked
        and before.get(tp) == (fetched, booked)
        and sought.get(tp) != (fetched, booked)
    }


@dataclass
class _Watch:
    before: dict[TP, Ahead] = field(default_factory=dict)
    sought: dict[TP, Ahead] = field(default_factory=dict)
    finished: int = -1


def install(
    app: faust.App, topic: str, pool: AsyncConnectionPool, group: str, activity: Activity
) -> None:
    watch = _Watch()

    @app.timer(interval=CHECK_INTERVAL_SECONDS)  # type: ignore[untyped-decorator]
    async def refetch_skipped() -> None:
        if app.rebalancing or activity.started != activity.finished:
            watch.before = {}
            return
        if activity.finished != watch.finished:  # took something since the last tick
            watch.finished, watch.before = activity.finished, {}
        try:
            now = await _positions(app, topic, pool, group)
        except Exception as exc:  # rebalancing or a fault; the next tick looks again
            log.debug("fetch positions not compared with the books: %r", exc)
            watch.before = {}
            return
        seeks = to_seek(now, watch.before, watch.sought)
        for tp, booked in seeks.items():
            log.warning(
                "%s[%d]: fetched up to %d but booked up to %d; reading again from there",
                tp.topic, tp.partition, now[tp][0], booked,
            )  # fmt: skip
            await app.consumer.seek(tp, booked)
            watch.sought[tp] = now[tp]
        watch.before = {tp: ahead for tp, ahead in now.items() if tp not in seeks}


async def _positions(
    app: faust.App, topic: str, pool: AsyncConnectionPool, group: str
) -> dict[TP, Ahead]:
    """Each assigned usage partition's fetch position and where its books say its next
    record is (only for partitions fetched past their start)."""
    consumer = app.consumer
    partitions = [tp for tp in consumer.assignment() if tp.topic == topic]
    positions = await asyncio.wait_for(
        asyncio.gather(*(consumer.position(tp) for tp in partitions)), POSITION_TIMEOUT_SECONDS
    )
    fetched = {tp: p for tp, p in zip(partitions, positions, strict=True) if p}
    if not fetched:
        return {}
    async with pool.connection() as conn:
        booked = await offsets.booked_up_to(conn, group, topic)
    never = [tp for tp in fetched if tp.partition not in booked]
    first = await consumer.earliest_offsets(*never) if never else {}
    return {
        tp: (position, booked[tp.partition] if tp.partition in booked else first[tp])
        for tp, position in fetched.items()
    }
