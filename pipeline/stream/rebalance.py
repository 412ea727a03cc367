"""After a rebalance, read again from the beginning the usage partitions the group never committed.

faust-streaming stops the consumer's flow while it rebalances and recovers its tables, and
drops what its fetcher hands over meanwhile (`Consumer._drain_messages` gives up a message
when `suspend_flow` fires, and still moves its read offset past it); it relies on seeking
every partition back to its committed offset once recovery is done
(`Recovery.on_recovery_completed` -> `Consumer.perform_seek`). aiokafka's
`seek_to_committed` leaves a partition without a committed offset where it is, so the
records dropped there are skipped until the worker restarts: with the live view's table
on, a worker restarted after kill -9 before its first offset commit booked nothing more
in 9 of 33 restarts (issue 16; the books stay exact: `pipeline.books.offsets` refuses a
later batch after such a gap, but records at the end of the stream wait for one).

`SeekUncommitted`, a Faust sensor, does what `consumer_auto_offset_reset="earliest"`
means for those partitions once each rebalance has ended: it seeks them to their first
offset (with Faust's `Consumer.seek`, which also resets the read offset). What was booked
already comes again and is absorbed as a redelivery.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import faust
from faust.transport.consumer import Consumer
from faust.types import AppT

log = logging.getLogger(__name__)


class SeekUncommitted(faust.Sensor):
    def __init__(self, topic: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.topic = topic
        self._seeks: set[asyncio.Task[None]] = set()

    def on_rebalance_end(self, app: AppT, state: dict[str, Any]) -> None:
        task = asyncio.ensure_future(self._seek(app))
        self._seeks.add(task)
        task.add_done_callback(self._seeks.discard)

    async def _seek(self, app: AppT) -> None:
        consumer = cast(Consumer, app.consumer)
        try:
            committed = await consumer.seek_to_committed()
            never = [
                tp for tp in consumer.assignment()
                if tp.topic == self.topic and (committed.get(tp) is None or committed[tp] < 0)
            ]  # fmt: skip
            if not never:
                return
            for tp, offset in (await consumer.earliest_offsets(*never)).items():
                await consumer.seek(tp, offset)
            log.info("reading again from the start of %s (no committed offset)", sorted(never))
        except Exception as exc:  # a rebalance that has started again will end again
            log.warning("seeking uncommitted partitions failed: %r", exc)
