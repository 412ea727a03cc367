"""Kafka at the edges of the CLI: publish records, read a topic from start to end."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.conn import create_conn
from aiokafka.errors import (
    GroupCoordinatorNotAvailableError,
    KafkaConnectionError,
    KafkaError,
    NodeNotReadyError,
    RequestTimedOutError,
    TopicAlreadyExistsError,
    for_code,
)

from pipeline.errors import PipelineError
from pipeline.stream.dlq import DeadLetter, from_record
from pipeline.stream.kafka_access import KafkaAccess, client_options

T = TypeVar("T")

Send = Callable[[str, bytes | None, bytes, list[tuple[str, bytes]]], Awaitable[None]]
"""send(topic, key, value, headers): publish one record and wait for the broker's ack."""


@dataclass(frozen=True, slots=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


def user_key(line: bytes) -> bytes | None:
    """The partition key of a usage event: its user_id, or none for unparseable input."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    user = data.get("user_id") if isinstance(data, dict) else None
    return str(user).encode() if user is not None else None


async def publish(
    kafka: KafkaAccess,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes, list[tuple[str, bytes]]]],
    on_sent: Callable[[int], None] = lambda n: None,
) -> int:
    """Publish (key, value, headers) records, waiting for every broker ack; returns the count."""
    producer = AIOKafkaProducer(
        **client_options(kafka),
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=1 << 20,
    )
    await producer.start()
    sent = 0
    try:
        pending = []
        for key, value, headers in records:
            pending.append(await producer.send(topic, value=value, key=key, headers=headers))
            if len(pending) >= 5000:
                sent += await _settle(pending, on_sent)
        sent += await _settle(pending, on_sent)
    finally:
        await producer.stop()
    return sent


async def _settle(pending: list, on_sent: Callable[[int], None]) -> int:  # type: ignore[type-arg]
    for fut in pending:
        await fut
    count = len(pending)
    on_sent(count)
    pending.clear()
    return count


async def connection_fault(kafka: KafkaAccess) -> BaseException | None:
    """Why the first bootstrap server refuses a connection (a TLS or SASL failure, say), or
    None if it accepts one. aiokafka's clients only log that cause and raise "Unable to
    bootstrap"; this asks again with one connection, which raises it."""
    host, _, port = kafka.bootstrap.split(",")[0].strip().rpartition(":")
    options = client_options(kafka)
    del options["bootstrap_servers"]
    try:
        conn = await create_conn(host, int(port), request_timeout_ms=10_000, **options)
    except (OSError, KafkaError, TimeoutError) as cause:
        return cause
    conn.close()
    return None


async def partitions(kafka: KafkaAccess, topic: str) -> set[int]:
    """Partitions of `topic`; empty if it does not exist.

    Asks for every topic's metadata: a metadata request that names a missing topic has
    brokers with auto.create.topics.enable create it, with their num.partitions."""
    async with _admin(kafka, request_timeout_ms=ADMIN_TIMEOUT_MS) as admin:
        described = await _on_a_live_node(admin.describe_topics)
    for t in described:
        if t["topic"] == topic and t["error_code"] == 0:
            return {p["partition"] for p in t["partitions"]}
    return set()


async def read_all(kafka: KafkaAccess, topic: str) -> AsyncIterator[Record]:
    """Every record of `topic` present now, without joining a consumer group."""
    consumer = AIOKafkaConsumer(**client_options(kafka), enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(await partitions(kafka, topic))]
        if not tps:
            return
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, messages in batch.items():
                for m in messages:
                    if m.offset < ends[tp]:
                        yield Record(m.partition, m.offset, m.key, m.value, tuple(m.headers))
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()


async def group_lag(kafka: KafkaAccess, group: str, topic: str) -> int | None:
    """Messages of `topic` not yet committed by `group`; None before its first commit."""
    async with _admin(kafka) as admin:
        try:
            committed = await admin.list_consumer_group_offsets(group)
        except GroupCoordinatorNotAvailableError:  # the broker is still electing it
            return None
    consumer = AIOKafkaConsumer(**client_options(kafka))
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await partitions(kafka, topic)]
        ends = await consumer.end_offsets(tps)
        mine = {tp: meta.offset for tp, meta in committed.items() if tp.topic == topic}
        if not mine and any(ends.values()):
            return None
        lag: int = sum(max(0, int(ends[tp]) - max(int(mine.get(tp, 0)), 0)) for tp in tps)
        return lag
    finally:
        await consumer.stop()


@asynccontextmanager
async def _admin(kafka: KafkaAccess, **options: int) -> AsyncIterator[AIOKafkaAdminClient]:
    """An admin client of `kafka` (with aiokafka `options`), closed on the way out."""
    admin = AIOKafkaAdminClient(**client_options(kafka), **options)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


ADMIN_TIMEOUT_MS = 5_000
"""An admin request sent to a broker that died (CreateTopics goes to the "controller" the
metadata names, which may be that broker) times out in this long, then is tried again."""
NODE_ATTEMPTS = 10
NODE_RETRY_SECONDS = 0.5
_NODE_GONE = (NodeNotReadyError, KafkaConnectionError, RequestTimedOutError, TimeoutError)
"""What an admin request to a broker that just died raises: aiokafka picks the node from
its metadata, which lists that broker until the controller fences it."""


TOPIC_VISIBLE_SECONDS = 10.0
"""How long a topic just created may take to appear in the brokers' metadata."""


class TopicNotCreated(PipelineError):
    """The broker refused to create a topic (other than because it exists)."""


async def ensure_topic(
    kafka: KafkaAccess,
    topic: str,
    count: int,
    replication: int = -1,
    config: Mapping[str, str] | None = None,
) -> set[int]:
    """The partitions of `topic`, created first with `count` partitions, `replication`
    replicas (-1: the brokers' default.replication.factor) and topic `config` if it does not
    exist (an existing topic stays as it is and needs no permission to create); a new topic's
    once the brokers describe it (it takes a moment to appear).

    The broker answers per topic in the response (aiokafka does not raise): every error
    but "already exists" is raised as TopicNotCreated.
    """
    if found := await partitions(kafka, topic):
        return found
    async with _admin(kafka, request_timeout_ms=ADMIN_TIMEOUT_MS) as admin:
        if replication < 1:
            replication = await _on_a_live_node(lambda: _default_replication(admin))
        new = NewTopic(topic, count, replication_factor=replication, topic_configs=config)
        response = await _on_a_live_node(lambda: admin.create_topics([new]))
    for name, code, *message in response.topic_errors:
        if code in (0, TopicAlreadyExistsError.errno):
            continue
        error = for_code(code)
        detail = message[0] if message and message[0] else error.description
        raise TopicNotCreated(f"topic {name!r} could not be created: {error.__name__}: {detail}")
    deadline = asyncio.get_running_loop().time() + TOPIC_VISIBLE_SECONDS
    while not (found := await partitions(kafka, topic)):
        if asyncio.get_running_loop().time() > deadline:
            raise TopicNotCreated(
                f"topic {topic!r} was created but not described within {TOPIC_VISIBLE_SECONDS} s"
            )
        await asyncio.sleep(NODE_RETRY_SECONDS / 5)
    return found


async def _on_a_live_node(call: Callable[[], Awaitable[T]]) -> T:
    """`call()`, asked again while it went to a broker that is gone: a broker just killed
    stays in the metadata a while, and the admin client sends a request to any broker it
    lists (a random one for metadata, the controller for CreateTopics)."""
    for _ in range(NODE_ATTEMPTS - 1):
        try:
            return await call()
        except _NODE_GONE:
            await asyncio.sleep(NODE_RETRY_SECONDS)
    return await call()


async def default_replication(kafka: KafkaAccess) -> int:
    """The brokers' default.replication.factor (as one broker reports it)."""
    async with _admin(kafka) as admin:
        return await _default_replication(admin)


async def _default_replication(admin: AIOKafkaAdminClient) -> int:
    """default.replication.factor as the first broker that answers reports it (a broker
    that just died stays in the metadata for a while)."""
    cluster = await admin.describe_cluster()
    wanted = {"default.replication.factor": None}
    refused: KafkaError | None = None
    for broker in (str(b["node_id"]) for b in cluster["brokers"]):
        resource = ConfigResource(ConfigResourceType.BROKER, broker, wanted)
        try:
            [response] = await admin.describe_configs([resource])
        except _NODE_GONE as exc:
            refused = exc
            continue
        for described in response.resources:
            for name, value, *_ in described[4]:
                if name == "default.replication.factor":
                    return int(value)
    raise refused or KafkaError("no broker reported default.replication.factor")


async def dead_letters(kafka: KafkaAccess, topic: str) -> list[DeadLetter]:
    """Every dead-letter record of `topic`; records without our headers are passed over."""
    letters = []
    async for record in read_all(kafka, topic):
        try:
            letters.append(from_record(record.headers, record.key, record.value))
        except ValueError:
            continue
    return letters
