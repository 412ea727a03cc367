"""The LiteLLM proxy's Kafka callback: each logged call, mapped to a contract event
(`pipeline.gateways.litellm`), published to the usage topic as batch records.

Register it in the proxy's `config.yaml` (the package installed with the `litellm` extra):

    litellm_settings:
      callbacks: pipeline.gateways.litellm_callback.handler

Settings come from the environment, as the worker's do (KAFKA_*, USAGE_TOPIC, DLQ_TOPIC,
LITELLM_USER_SOURCE, LITELLM_SPOOL_PATH, LITELLM_BUFFER_EVENTS).

It never blocks or fails a model request: a hook only maps the payload and queues the
record; one task of the proxy's loop publishes with an idempotent producer (acks=all).
When Kafka cannot take them, the queued records go to the spool, an append-only local
file, and the task retries until the broker is back, replays the spool in order, then
goes on with the queue; a queue over LITELLM_BUFFER_EVENTS spills to the spool too. So a
broker outage or a proxy restart loses no call (a restarted proxy replays its spool once
it logs its next call), and a call published twice books once (request_id).
Counted in `usage_litellm_records_total` and a log line per outage.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from litellm.integrations.custom_logger import CustomLogger
from prometheus_client import Counter

from pipeline.core.events import Rejection
from pipeline.core.records import group_by_partition
from pipeline.gateways import litellm
from pipeline.gateways.spool import Outgoing, Spool
from pipeline.settings import Settings, from_environment
from pipeline.stream import dlq, kafka_io
from pipeline.stream.kafka_access import KafkaAccess, client_options, from_settings

log = logging.getLogger(__name__)

RETRY_SECONDS = 2.0
SEND_TIMEOUT_SECONDS = 10.0
RECORDS_PER_SEND = 5000
NOT_BILLED = ("messages", "response")
"""Payload fields a dead-letter record leaves out: the prompt and the answer."""

RECORDS = Counter("usage_litellm_records", "LiteLLM calls handled by the Kafka callback",
                  ["outcome"])  # fmt: skip


def outgoing(payload: Any, billed: litellm.BilledUser, settings: Settings) -> Outgoing:
    """The record of one logged call: its event, keyed by its user's alias, or a
    dead-letter record of the payload (without prompt and answer) and why."""
    mapped = litellm.to_event(payload, billed)
    if isinstance(mapped, Rejection):
        return _dead_letter(payload, mapped, settings.dlq_topic)
    return Outgoing(settings.usage_topic, mapped["user_id"].encode(), json.dumps(mapped).encode())


def _dead_letter(payload: Any, why: Rejection, topic: str) -> Outgoing:
    kept = (
        {k: v for k, v in payload.items() if k not in NOT_BILLED}
        if isinstance(payload, dict)
        else payload
    )
    letter = dlq.DeadLetter(
        reason=why.reason.value, detail=why.detail, source_topic="litellm",
        source_partition=-1, source_offset=-1, failed_at=datetime.now(UTC), key=None,
        value=json.dumps(kept, default=str).encode(),
    )  # fmt: skip
    assert letter.value is not None
    return Outgoing(topic, None, letter.value, tuple(dlq.to_headers(letter)))


class KafkaUsageLogger(CustomLogger):  # type: ignore[misc]
    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__()
        self.settings = settings or from_environment()
        self.billed = self.settings.litellm_billed_user
        self.kafka: KafkaAccess = from_settings(self.settings)
        self.spool = Spool(self.settings.litellm_spool_path)
        self.queue: deque[Outgoing] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._producer: tuple[AIOKafkaProducer, int] | None = None

    # LiteLLM's hooks (only the async ones: the proxy calls both for some failures).
    async def async_log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self.take(kwargs.get("standard_logging_object"))

    async def async_log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self.take(kwargs.get("standard_logging_object"))

    def take(self, payload: Any) -> None:
        """Queue the call's record and make sure the publishing task runs; never raises."""
        try:
            record = outgoing(payload, self.billed, self.settings)
            if len(self.queue) >= self.settings.litellm_buffer_events:
                self.spool.append([record])
                RECORDS.labels("spooled").inc()
            else:
                self.queue.append(record)
            self._running().set()
        except Exception:  # a callback must not fail the proxy's request
            log.exception("litellm callback: a call could not be queued")

    def _running(self) -> asyncio.Event:
        if self._wake is None:
            self._wake = asyncio.Event()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._publish_forever())
        return self._wake

    async def _publish_forever(self) -> None:
        assert self._wake is not None
        while True:
            try:
                await self._publish_all()
            except (KafkaError, OSError, TimeoutError) as exc:
                spilled = list(self.queue)
                self.queue.clear()
                self.spool.append(spilled)
                RECORDS.labels("spooled").inc(len(spilled))
                if spilled:  # the retries that find nothing new to spool stay quiet
                    log.warning("litellm callback: Kafka unavailable (%s); %d records spooled "
                                "to %s, retrying every %.0f s", type(exc).__name__, len(spilled),
                                self.spool.path, RETRY_SECONDS)  # fmt: skip
                await self._close()
                await asyncio.sleep(RETRY_SECONDS)
                continue
            self._wake.clear()
            await self._wake.wait()

    async def _publish_all(self) -> None:
        producer, partitions = await self._ready()
        while spooled := self.spool.claim():
            await _send(producer, partitions, spooled)
            self.spool.release()
            RECORDS.labels("replayed").inc(len(spooled))
            # As loud as the outage's line (the proxy shows warnings only): its end.
            log.warning("litellm callback: Kafka is back; replayed %d spooled records",
                        len(spooled))  # fmt: skip
        while self.queue:
            batch = [self.queue.popleft() for _ in range(min(len(self.queue), RECORDS_PER_SEND))]
            try:
                await _send(producer, partitions, batch)
            except BaseException:
                self.queue.extendleft(reversed(batch))  # spooled with the rest, in order
                raise
            RECORDS.labels("published").inc(len(batch))

    async def _ready(self) -> tuple[AIOKafkaProducer, int]:
        if self._producer is None:
            s = self.settings
            partitions = len(
                await kafka_io.ensure_topic(
                    self.kafka, s.usage_topic, s.topic_partitions, s.topic_replication_factor
                )
            )
            producer = AIOKafkaProducer(
                **client_options(self.kafka), acks="all", enable_idempotence=True,
                linger_ms=5, max_batch_size=1 << 20,
                request_timeout_ms=int(SEND_TIMEOUT_SECONDS * 1000),
            )  # fmt: skip
            try:
                await asyncio.wait_for(producer.start(), SEND_TIMEOUT_SECONDS)
            except BaseException:
                await producer.stop()
                raise
            self._producer = (producer, partitions)
        return self._producer

    async def _close(self) -> None:
        found, self._producer = self._producer, None
        if found is not None:
            await found[0].stop()


async def _send(producer: AIOKafkaProducer, partitions: int, records: Sequence[Outgoing]) -> None:
    """Publish and wait for every ack: the events as batch records grouped by their users'
    partitions, the dead letters (the records with headers) one by one."""
    events: dict[str, list[tuple[bytes | None, bytes]]] = {}
    sends = []
    for r in records:
        if r.headers:
            sends.append(await producer.send(r.topic, r.value, r.key, headers=list(r.headers)))
        else:
            events.setdefault(r.topic, []).append((r.key, r.value))
    for topic, pairs in events.items():
        for key, value in group_by_partition(pairs, partitions):
            sends.append(await producer.send(topic, value, key))
    await asyncio.wait_for(asyncio.gather(*sends), SEND_TIMEOUT_SECONDS)


handler = KafkaUsageLogger()
"""The instance `config.yaml` names."""
