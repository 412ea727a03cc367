"""POST /v1/events: a body of events -> per-event verdicts -> batch records on the usage topic.

The functional core (`split_body`, `judge`, `plan`, `results`) decides; `Publisher` sends.
Events are validated by the contract the worker decodes with (`pipeline.core.events`), so a
rejected event is answered with the reason code its dead-letter record would carry, and
is not published. Accepted events go out as batch records grouped by partition, each
record holding the events' original bytes, and the answer waits for the broker's acks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from pipeline.api.problems import Problem
from pipeline.core import records
from pipeline.core.events import Decoded, Rejection, UsageEvent, decode
from pipeline.errors import Reason
from pipeline.gateways import litellm
from pipeline.gateways.litellm import BilledUser
from pipeline.stream import kafka_io
from pipeline.stream.kafka_access import KafkaAccess, client_options

NDJSON = "application/x-ndjson"
JSON = "application/json"


def split_body(content_type: str, body: bytes, max_events: int) -> list[bytes]:
    """The events of a body, each as its own bytes: one JSON object, a JSON array, or NDJSON."""
    if content_type == NDJSON:
        items = [line for line in body.splitlines() if line.strip()]
    elif content_type in (JSON, ""):
        if records.is_batch(body):
            try:
                items = list(records.split(body))
            except ValueError as exc:
                raise Problem("bad-request", f"the body is not a JSON array: {exc}") from None
        else:
            items = [body]
    else:
        raise Problem("unsupported-media-type", f"Content-Type {content_type} is not taken")
    if not items or not any(item.strip() for item in items):
        raise Problem("bad-request", "the body holds no event")
    if len(items) > max_events:
        raise Problem(
            "payload-too-large", f"{len(items)} events in one request; at most {max_events}"
        )
    return items


def judge(items: Sequence[bytes], now: datetime, max_future_skew: timedelta) -> list[Decoded]:
    return [decode(item, now, max_future_skew) for item in items]


def litellm_payloads(body: bytes, max_events: int) -> list[Any]:
    """The payloads of a LiteLLM `generic_api` batch: a JSON array (`json_array`), one
    object, or NDJSON (`ndjson`, which LiteLLM sends as application/json too). A line
    that is not JSON stays in the list as its bytes, to be answered malformed_json."""
    try:
        whole = json.loads(body)
    except ValueError:
        whole = None
        payloads: list[Any] = []
        for line in body.splitlines():
            if line.strip():
                try:
                    payloads.append(json.loads(line))
                except ValueError:
                    payloads.append(line)
    else:
        payloads = whole if isinstance(whole, list) else [whole]
    if not payloads:
        raise Problem("bad-request", "the body holds no LiteLLM payload")
    if len(payloads) > max_events:
        raise Problem(
            "payload-too-large", f"{len(payloads)} payloads in one request; at most {max_events}"
        )
    return payloads


def judge_litellm(
    payloads: Sequence[Any], billed: BilledUser, now: datetime, max_future_skew: timedelta
) -> tuple[list[bytes], list[Decoded]]:
    """Each payload mapped to a contract event (`pipeline.gateways.litellm`) and judged as
    the worker will: the events' bytes and their verdicts."""
    items: list[bytes] = []
    verdicts: list[Decoded] = []
    for payload in payloads:
        mapped = (
            Rejection(Reason.MALFORMED_JSON, "an NDJSON line is not JSON")
            if isinstance(payload, bytes)
            else litellm.to_event(payload, billed)
        )
        item = json.dumps(mapped).encode() if isinstance(mapped, dict) else b""
        items.append(item)
        verdicts.append(
            mapped if isinstance(mapped, Rejection) else decode(item, now, max_future_skew)
        )
    return items, verdicts


def foreign_users(verdicts: Sequence[Decoded], allowed: frozenset[UUID] | None) -> list[int]:
    """Positions of accepted events of users outside `allowed` (None: every user)."""
    if allowed is None:
        return []
    return [
        i for i, v in enumerate(verdicts) if isinstance(v, UsageEvent) and v.user_id not in allowed
    ]


@dataclass(frozen=True, slots=True)
class Planned:
    key: bytes
    value: bytes
    positions: tuple[int, ...]
    """Positions in the request of the events this record carries."""


def plan(items: Sequence[bytes], verdicts: Sequence[Decoded], partitions: int) -> list[Planned]:
    """The batch records of the accepted events: grouped by their user's partition."""
    accepted = [i for i, v in enumerate(verdicts) if isinstance(v, UsageEvent)]
    keys = [str(verdicts[i].user_id).encode() for i in accepted]  # type: ignore[union-attr]
    planned = []
    for group in records.partition_groups(keys, partitions):
        positions = tuple(accepted[g] for g in group)
        value = records.batch_value([items[p] for p in positions])
        planned.append(Planned(keys[group[0]], value, positions))
    return planned


def results(verdicts: Sequence[Decoded], unpublished: set[int]) -> list[dict[str, Any]]:
    """The answer per event, in request order."""
    answers: list[dict[str, Any]] = []
    for i, verdict in enumerate(verdicts):
        if isinstance(verdict, Rejection):
            answers.append({"index": i, "status": "rejected", "reason": verdict.reason.value,
                            "detail": verdict.detail})  # fmt: skip
        else:
            status = "not_published" if i in unpublished else "accepted"
            answers.append({"index": i, "request_id": str(verdict.request_id), "status": status})
    return answers


class BrokerUnavailable(Exception):
    """The producer cannot start or the broker did not acknowledge in time."""


class Publisher:
    """One idempotent producer (acks=all) for the process, started on first use, so the
    API starts (and answers 503) while the broker is away."""

    def __init__(
        self, kafka: KafkaAccess, topic: str, partitions: int, replication: int, timeout: float
    ) -> None:
        self.kafka, self.topic, self.timeout = kafka, topic, timeout
        self.wanted_partitions, self.replication = partitions, replication
        self.partitions: int | None = None
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    async def _ready(self) -> tuple[AIOKafkaProducer, int]:
        async with self._starting:
            if self._producer is None or self.partitions is None:
                try:
                    await asyncio.wait_for(self._start(), self.timeout)
                except (KafkaError, OSError, TimeoutError) as exc:
                    await self.close()
                    raise BrokerUnavailable(str(exc) or type(exc).__name__) from None
            assert self._producer is not None and self.partitions is not None
            return self._producer, self.partitions

    async def _start(self) -> None:
        self.partitions = len(
            await kafka_io.ensure_topic(
                self.kafka, self.topic, self.wanted_partitions, self.replication
            )
        )
        producer = AIOKafkaProducer(
            **client_options(self.kafka),
            acks="all",
            enable_idempotence=True,
            linger_ms=1,
            max_batch_size=1 << 20,
            request_timeout_ms=int(self.timeout * 1000),
        )
        await producer.start()
        self._producer = producer

    async def partition_count(self) -> int:
        return (await self._ready())[1]

    async def send(self, planned: Sequence[Planned]) -> set[int]:
        """Publish the records; the positions of the events whose record was not acked."""
        producer, _ = await self._ready()
        sends = [producer.send(self.topic, p.value, p.key) for p in planned]
        acks = await asyncio.gather(
            *(asyncio.wait_for(self._acked(send), self.timeout) for send in sends),
            return_exceptions=True,
        )
        return {pos for p, ack in zip(planned, acks, strict=True) if ack is not None
                for pos in p.positions}  # fmt: skip

    @staticmethod
    async def _acked(send: Any) -> None:
        await (await send)

    async def reachable(self) -> bool:
        try:
            producer, _ = await self._ready()
            return bool(await asyncio.wait_for(producer.client.fetch_all_metadata(), self.timeout))
        except (BrokerUnavailable, KafkaError, OSError, TimeoutError):
            return False

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()
