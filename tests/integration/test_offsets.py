"""Records the consumer skipped are found, rewound to and booked (`pipeline.books.offsets`).

The skip is made the way faust-streaming makes it: the group's committed offset moves
past records nobody booked. The worker must refuse the batch that starts past its
booked-up-to offset, rewind the group, exit, and book everything after the restart.
A batch with a hole among its records is refused the same way (tests/unit/test_offsets.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from pipeline.stream.usage_agent import EXIT_BATCH_NOT_BOOKED
from tests.integration.pipeline_harness import Harness, make_event, wait_for
from tests.integration.test_pipeline import assert_books_clean, new_user


async def _commit(bootstrap: str, group: str, topic: str, partition: int, offset: int) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.commit({tp: OffsetAndMetadata(offset, "")})
    finally:
        await consumer.stop()


def test_skipped_records_are_rewound_to_and_booked(
    new_books: Callable[[], str], kafka_bootstrap: str, tmp_path: Path
) -> None:
    # A worker that exits without leaving the group holds its partitions for the
    # session timeout (the BROKER_SESSION_TIMEOUT setting).
    h = Harness(
        new_books(),
        kafka_bootstrap,
        env_overrides={"BROKER_SESSION_TIMEOUT": "6", "BROKER_HEARTBEAT_INTERVAL": "1"},
    )
    user = new_user(h, credits=1_000_000)
    first = [make_event(user) for _ in range(30)]
    h.publish(first)
    h.start_worker(tmp_path)
    try:
        wait_for(
            lambda: h.alive() and h.booked([e["request_id"] for e in first]) == 30, 60, "first 30"
        )
        h.stop_worker()
        later = [make_event(user) for _ in range(40)]
        h.publish(later)
        [(partition, next_offset)] = h.query(
            "SELECT partition, next_offset FROM consumer_offsets WHERE consumer_group = %s",
            f"worker-{h.tag}",
        )
        assert next_offset == 30
        # 25 of the later records are acknowledged without being booked.
        asyncio.run(_commit(kafka_bootstrap, f"worker-{h.tag}", h.usage_topic, partition, 55))

        ids = [e["request_id"] for e in first + later]
        # The first take starts past the books: the worker rewinds and exits. (Should it
        # sit idle first, `pipeline.stream.refetch` reads again from the books in-process.)
        # A rewind whose commit a rebalance refused is not remembered, so the next start
        # finds the same gap and rewinds again: each start books or exits 70, the third books.
        for _ in range(3):
            h.start_worker(tmp_path)
            worker = h.worker
            assert worker is not None
            wait_for(
                lambda w=worker: w.poll() is not None or h.booked(ids) == 70, 60, "exit or books"
            )
            if worker.poll() is None:
                break
            assert worker.returncode == EXIT_BATCH_NOT_BOOKED
            assert "records were skipped" in (h.log_path.read_text() if h.log_path else "")
            assert h.booked([e["request_id"] for e in later]) == 0
        wait_for(lambda: h.alive() and h.booked(ids) == 70, 90, "all 70 booked")
        assert h.query("SELECT count(*) FROM token_usage_ledger")[0][0] == 70
        assert h.query(
            "SELECT next_offset, rewound_to FROM consumer_offsets WHERE consumer_group = %s",
            f"worker-{h.tag}",
        ) == [(70, None)]
        assert_books_clean(h, user)
    finally:
        h.stop_worker()
