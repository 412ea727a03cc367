"""The worker's consumer waits at most FETCH_MAX_WAIT_MS at the broker per fetch, where
Faust's own transport hard-codes 1,500 ms (`pipeline/stream/kafka_transport.py`)."""

from __future__ import annotations

import asyncio

from pipeline.settings import Settings
from pipeline.stream.app import new_app
from pipeline.stream.kafka_access import KafkaAccess
from pipeline.stream.kafka_transport import FETCH_MAX_WAIT_MS


def test_the_workers_consumer_is_created_with_the_short_fetch_wait() -> None:
    settings = Settings(TOPIC_REPLICATION_FACTOR=1)  # type: ignore[call-arg]
    app, _ = new_app(settings, KafkaAccess("127.0.0.1:1"))

    async def created() -> int:
        thread = app.consumer._new_consumer_thread()  # type: ignore[attr-defined]
        consumer = thread._create_worker_consumer(app.transport)
        wait: int = consumer._fetch_max_wait_ms  # what AIOKafkaConsumer.start() gives its fetcher
        return wait

    assert FETCH_MAX_WAIT_MS < 1500
    assert asyncio.run(created()) == FETCH_MAX_WAIT_MS
