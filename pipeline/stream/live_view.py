"""The live view: today's usage and spend per user, from a Faust windowed table.

`GET /users/{user_id}/usage/today` on any worker answers from a tumbling one-day table
(UTC days, epoch aligned) without touching PostgreSQL. The Postgres ledger and summaries
stay the books; this view is best effort and only ever lags behind them (see the README,
"Live usage view", for how far it can drift).

How the table is written, and why:

- Each committed batch's newly booked rows (`BatchPlan.usage_rows`: only what the
  transaction inserted, so duplicates never count twice), summed per (user, UTC day of
  `request_started_at`) once for the books (`BatchPlan.user_days`), are added into
  `pending` (`pipeline.core.live_usage.day_deltas`), and each pending delta is added to
  the table about LIVE_USAGE_FLUSH_SECONDS later with
  ``windows.relative_to(day_start)[user].apply(merge_json, delta)``. A table write is a
  changelog record through Faust's per-message producer path (70-140 us here), so one
  write per user and day per batch cost a third of the worker's throughput; one per
  interval bounds the cost by the users active in an interval, whatever the event rate.
  The writes are paced, oldest first, a share every WRITE_TICK_SECONDS (`write_due`): all
  of them at the end of each interval were a burst that held the booking back. Reads
  add what is pending, so the owning worker answers with every committed batch at once;
  only a kill -9 can lose what was pending (about one interval), as it could lose the
  changelog records in flight before. A revocation and a stop write everything first,
  and nothing is written while the tables recover (a write then would merge into a
  half-recovered value).
  `relative_to` with an explicit timestamp is Faust's own API for "the window of this
  instant": the agent consumes raw bytes in batches (`take_events`), where Faust's
  event-time helpers (`relative_to_stream`, `relative_to_field`) would use the batch's
  last event or need a `faust.Record` stream. A table keyed by (user, day) by hand would
  rebuild what the tumbling window already stores (`(key, (start, end))`) and lose its
  expiry.
- Faust picks a table write's changelog partition from the *current event*, which does
  not exist inside a `take_events` batch (faust-streaming/faust#497: "Cannot modify table
  key from outside of stream iteration"). `_UserPartitionedTable` therefore writes each
  user's windows to the partition the user's usage events arrived on, which is what Faust
  does for one-event-at-a-time agents: the changelog stays co-partitioned with the usage
  topic, so a rebalance recovers a user's windows on the worker that books the user.
- Reads are routed to the worker that owns the user's usage partition (the group's
  assignment of the usage topic, `app.router.external_topics_metadata`, which is what
  Faust's `topic_route` looks up), and
  forwarded once with a marker header, so two workers that disagree during a rebalance
  cannot bounce a request between them. `table_route` cannot be used: it hashes the
  table's JSON-serialized key, not the raw user id bytes the usage topic is keyed by.
- The table's changelog records do not go through Faust's producer buffer
  (`Topic.send_soon`): a send that fails there crashes the buffer's task and with it the
  worker. One did when a write went to a changelog partition the producer's metadata
  lacked (aiokafka's `AssertionError: Unrecognized partition`): the changelog had fewer
  partitions than the usage topic (`pipeline.stream.app.resolve_partitions` now prevents
  that at start; a usage topic given more partitions while workers run still does it).
  `_UserPartitionedTable.send_changelog` holds each key's newest record instead, and
  `LiveUsage` sends the held records itself: one the producer refuses, or whose delivery
  fails, is held again and sent on a later tick, unless a newer value of its key is held
  or in flight (each record is the key's whole value, so the newest is all the changelog
  needs).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from functools import partial
from itertools import islice
from typing import Any, cast
from uuid import UUID

import aiohttp
import faust
from faust.exceptions import ConsumerNotStarted
from faust.tables.wrappers import WindowWrapper
from faust.types import CodecArg, FutureMessage, TopicT
from yarl import URL

from pipeline.core.live_usage import (
    DayTotals,
    day_deltas,
    day_start,
    merge_json,
    paced_writes,
    parse_user_id,
    view,
)
from pipeline.stream.booker import BatchResult
from pipeline.stream.dlq import SourceMessage

log = logging.getLogger(__name__)

TABLE_NAME = "live_usage"
PATH = "/users/{user_id}/usage/today"
DAY = timedelta(days=1)
MILLISECOND = timedelta(milliseconds=1)
FORWARDED_HEADER = "X-Usage-Live-Forwarded"
FORWARD_TIMEOUT_SECONDS = 5.0
WRITE_TICK_SECONDS = 0.1
"""How often a share of the pending deltas is written (`LiveUsage.write_due`)."""
FLUSH_CHUNK = 50
"""Table writes at a time, so that a flush never holds the event loop for long (writing a
flush of 400 at once cut a worker offered 5,000 events/s to 3,700)."""


CHANGELOG_CONFIG = {"cleanup.policy": "compact,delete", "retention.ms": str(DAY // MILLISECOND)}
"""The changelog's topic config as Faust makes it for a windowed table (compacted, and
deleted after the window's expiry), for a worker that creates it (`resolve_partitions`)."""


def changelog_topic(app_id: str) -> str:
    """The table's changelog topic, as Faust names it (`Collection._changelog_topic_name`)."""
    return f"{app_id}-{TABLE_NAME}-changelog"


class _UserPartitionedTable(faust.Table[str, Any]):
    """A table whose next write goes to the changelog partition set in `write_partition`,
    and whose changelog records wait in `held`, the newest per key, for `LiveUsage` to
    send them."""

    write_partition: int | None = None
    held: dict[Any, FutureMessage]

    def partition_for_key(self, key: Any) -> int | None:
        if self.write_partition is None:
            raise RuntimeError(f"{TABLE_NAME}: write without a partition")
        return self.write_partition

    def send_changelog(
        self,
        partition: int | None,
        key: Any,
        value: Any,
        key_serializer: CodecArg | None = None,
        value_serializer: CodecArg | None = None,
    ) -> FutureMessage:
        """Hold the record (serialized now) instead of Faust's `send_soon`."""
        fut = self.changelog_topic.as_future_message(
            key=key,
            value=value,
            partition=partition,
            key_serializer=key_serializer or self.key_serializer,
            value_serializer=value_serializer or self.value_serializer,
            callback=self._on_changelog_sent,
        )
        self.held.pop(key, None)  # the newest goes last: held in the order written
        self.held[key] = fut
        return fut


class LiveUsage:
    """The windowed table, the deltas not yet in it, the hook the agent calls after each
    commit, and the web page."""

    def __init__(self, app: faust.App, usage_topic: TopicT) -> None:
        self.app = app
        self.usage_topic = usage_topic
        self.table = _UserPartitionedTable(
            app,
            name=TABLE_NAME,
            default=lambda: DayTotals().to_json(),
            beacon=app.tables.beacon,
            help="Live usage per user and UTC day (best effort; Postgres has the books).",
        )
        self.table.held = {}
        app.tables.add(self.table)
        self.days = cast(WindowWrapper, self.table.tumbling(DAY, expires=DAY))
        self.pending: dict[tuple[str, date], tuple[int, DayTotals]] = {}
        """(user, day) -> (the changelog partition, what is booked but not in the table)."""
        self._owed = 0.0
        """Writes `write_due` owes, carried from tick to tick (fractions included)."""
        self._in_flight: dict[Any, FutureMessage] = {}
        """Table key -> its newest changelog record sent and not yet acknowledged."""
        self._generation = 0
        """Bumped by `forget`: a delivery failure of an older generation is not retried."""
        self._refused = False
        """The producer refused a record at the last try (logged when that starts and ends)."""

    def record(self, result: BatchResult, messages: Sequence[SourceMessage]) -> None:
        """Add a committed batch's new rows; never fails the agent (the books are done)."""
        try:
            self._record(result, messages)
        except Exception as exc:
            log.warning("live usage view missed a committed batch: %r", exc)

    def _record(self, result: BatchResult, messages: Sequence[SourceMessage]) -> None:
        deltas = [d for plan in result.plans if (d := day_deltas(plan.user_days))]
        if not deltas:
            return
        # The partition each user's events arrived on: the topic is keyed by user id.
        arrived_on = {m.key: m.partition for m in messages if m.key is not None}
        for (user, day), delta in (item for d in deltas for item in d.items()):
            key = (str(user), day)
            partition = arrived_on.get(key[0].encode())
            if partition is None:  # keyed differently; use the partition reads route to
                partition = self._usage_partition(user)
            if partition is None:
                raise LookupError(f"no partition of {self.usage_topic} known for {user}")
            before = self.pending.get(key)
            self.pending[key] = (partition, before[1].plus(delta) if before else delta)

    async def write_due(self, tick_seconds: float, flush_seconds: float) -> None:
        """One tick's share of the pending deltas, oldest first: as many as writes every
        pending delta once per `flush_seconds` at this tick rate (at most FLUSH_CHUNK).

        Paced rather than all at once: a flush of every active user at the end of each
        interval is a burst of table writes (~70-140 us each) that holds the event loop and
        the producer while records wait to be booked."""
        count, self._owed = paced_writes(
            self._owed, len(self.pending), tick_seconds / flush_seconds, FLUSH_CHUNK
        )
        await self._write_oldest(count)

    async def flush(self) -> None:
        """Write every pending delta into the table and send its changelog records."""
        while await self._write_oldest(FLUSH_CHUNK) and self.pending:
            pass

    def forget(self) -> None:
        """Drop what is pending or held (after a revocation's flush: the partitions' next
        owner recovers from the changelog, and a write of ours now could overwrite its)."""
        lost = len(self.pending) + len(self.table.held)
        if lost:
            log.warning("live usage view: %d increments lost at a revocation", lost)
        self.pending.clear()
        self.table.held.clear()
        self._in_flight.clear()
        self._generation += 1

    async def _write_oldest(self, count: int) -> bool:
        """Write the `count` oldest pending deltas and send the changelog records held;
        False if nothing can be written now (the tables recover: a write would merge into
        a half-recovered value) or the producer refuses a record."""
        if self.app.tables.recovery.in_recovery:  # type: ignore[attr-defined]
            return False
        for key in list(islice(self.pending, count)):
            partition, delta = self.pending.pop(key)
            try:
                self._write(key, partition, delta)
            except Exception as exc:
                log.warning("live usage view missed %s of %s: %r", delta, key, exc)
        return await self._send_held()

    async def _send_held(self) -> bool:
        """Send the held changelog records, oldest first; one the producer refuses stays
        held for a later tick. False if any was refused."""
        held, topic = self.table.held, self.table.changelog_topic
        refused = None
        for key, fut in list(held.items()):
            try:
                await topic.publish_message(fut)
            except Exception as exc:
                refused = exc
                continue
            if held.get(key) is fut:  # not replaced while the send waited
                del held[key]
            self._in_flight[key] = fut
            fut.add_done_callback(partial(self._delivered, key, self._generation))
        if (refused is not None) != self._refused:  # logged when it starts and ends
            if refused is not None:
                log.warning("live usage view: changelog records held for a retry: %r", refused)
            else:
                log.warning("live usage view: its changelog records are sent again")
        self._refused = refused is not None
        return not self._refused

    def _delivered(self, key: Any, generation: int, fut: FutureMessage) -> None:
        """Hold a record whose delivery failed again, if it is still its key's newest."""
        failed = fut.cancelled() or fut.exception() is not None
        if self._in_flight.get(key) is not fut:
            return
        del self._in_flight[key]
        if failed and generation == self._generation and key not in self.table.held:
            self.table.held[key] = FutureMessage(fut.message)

    def _write(self, key: tuple[str, date], partition: int, delta: DayTotals) -> None:
        user, day = key
        self.table.write_partition = partition
        try:
            self.days.relative_to(day_start(day))[user].apply(merge_json, delta.to_json())
        finally:
            self.table.write_partition = None

    def today(self, user: UUID) -> tuple[date, DayTotals]:
        day = datetime.now(UTC).date()
        stored = DayTotals.from_json(self.days.relative_to(day_start(day))[str(user)].value())
        pending = self.pending.get((str(user), day))
        return day, stored.plus(pending[1]) if pending else stored

    async def serve(self, web: faust.web.View, request: faust.web.Request, user_id: str) -> Any:
        user = parse_user_id(user_id)
        if isinstance(user, str):
            return web.json({"error": user}, status=400)
        if FORWARDED_HEADER not in request.headers:
            owner = self._owner(user)
            if owner is None:
                return web.json({"error": "partition owner unknown (rebalancing)"}, status=503)
            if not _same_worker(owner, self.app.conf.canonical_url):
                return await self._forward(web, owner.with_path(request.rel_url.path))
        day, totals = self.today(user)
        body = view(user, day, totals)
        body["worker"] = str(self.app.conf.canonical_url)
        return web.json(body)

    def _owner(self, user: UUID) -> URL | None:
        """The web URL of the worker the group assigned the user's usage partition to;
        None while that is not known (starting, rebalancing).

        Not the router's `external_topic_key_store`: it hashes with the producer's
        metadata, which lacks the usage topic until the producer has fetched it, and then
        fails with a TypeError instead of a KeyError (a 500 while a worker starts)."""
        partition = self._usage_partition(user)
        topic = self.usage_topic.get_topic_name()
        for url, topics in self.app.router.external_topics_metadata().items():
            if partition in topics.get(topic, ()):
                return URL(url)
        return None

    def _usage_partition(self, user: UUID) -> int | None:
        """The usage partition the user's events hash to (murmur2 of the key, as the
        producers' partitioner), from the consumer's metadata of the topic."""
        try:
            return self.app.consumer.key_partition(
                self.usage_topic.get_topic_name(), str(user).encode()
            )
        except ConsumerNotStarted:
            return None

    async def _forward(self, web: faust.web.View, url: URL) -> Any:
        try:
            async with self.app.http_client.get(
                url,
                headers={FORWARDED_HEADER: "1"},
                timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_SECONDS),
            ) as response:
                return web.bytes(
                    await response.read(),
                    content_type=response.content_type,
                    status=response.status,
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = f"owner {url.origin()} unreachable: {exc!r}"
            return web.json({"error": error}, status=503)


def install_live_view(app: faust.App, usage_topic: TopicT, flush_seconds: float) -> LiveUsage:
    """Declare the table, its flushes and the page on `app`; the agent calls `.record`
    after commits."""
    live = LiveUsage(app, usage_topic)

    tick = min(WRITE_TICK_SECONDS, flush_seconds)

    @app.timer(interval=tick)  # type: ignore[untyped-decorator]
    async def write_live_usage() -> None:
        await live.write_due(tick, flush_seconds)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def _revoked(app: faust.App, revoked: Any, **kwargs: Any) -> None:
        await live.flush()  # the next owner recovers these from the changelog
        await app.producer.flush()
        live.forget()

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def _stopping(app: faust.App, **kwargs: Any) -> None:
        await live.flush()  # Faust flushes the producer next

    @app.page(PATH)
    async def usage_today(web: faust.web.View, request: faust.web.Request, user_id: str) -> Any:
        return await live.serve(web, request, user_id)

    return live


def _same_worker(a: URL, b: URL) -> bool:
    return (a.host, a.port) == (b.host, b.port)
