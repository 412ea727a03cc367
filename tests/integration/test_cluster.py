"""Topics fit for a cluster (issue 11): on a 3-broker KRaft cluster (`devstack.cluster`) every
topic the pipeline or Faust creates takes the brokers' replication factor, and a broker
killed mid-stream loses nothing: every event is booked once, none dead-lettered, and the
books reconcile."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from pipeline.money.reconcile import reconcile
from pipeline.ops.devstack import cluster
from tests.integration.pipeline_harness import Harness, make_event, wait_for
from tests.integration.test_pipeline import new_user

pytestmark = [pytest.mark.integration, pytest.mark.drill]


@pytest.fixture(scope="module")
def kafka_cluster() -> Iterator[cluster.Cluster]:
    root = Path(tempfile.mkdtemp(prefix="usage-pipeline-cluster-"))
    started = cluster.start(root, brokers=3, partitions=2)
    try:
        yield started
    finally:
        cluster.stop(started)
        shutil.rmtree(root, ignore_errors=True)


def describe(bootstrap: str, topics: list[str]) -> dict[str, dict[int, tuple[int, list[int]]]]:
    """topic -> partition -> (leader, replicas); topics that do not exist are left out."""

    async def run() -> dict[str, dict[int, tuple[int, list[int]]]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            described = await admin.describe_topics(topics)
        finally:
            await admin.close()
        return {
            t["topic"]: {p["partition"]: (p["leader"], p["replicas"]) for p in t["partitions"]}
            for t in described
            if t["error_code"] == 0
        }

    return asyncio.run(run())


def test_a_broker_killed_mid_stream_loses_nothing(
    kafka_cluster: cluster.Cluster, seeded_db: str, tmp_path: Path
) -> None:
    h = Harness(seeded_db, kafka_cluster.bootstrap)
    users = [new_user(h, credits=10_000_000) for _ in range(6)]
    first = [make_event(users[i % len(users)]) for i in range(300)]
    h.publish(first)
    h.start_worker(tmp_path)
    try:
        wait_for(lambda: h.alive() and h.booked([e["request_id"] for e in first]) > 0, 120,
                 "the worker's first bookings")  # fmt: skip
        leader = describe(h.bootstrap, [h.usage_topic])[h.usage_topic][0][0]
        cluster.kill_broker(kafka_cluster, leader)  # the leader of partition 0, mid-stream
        second = [make_event(users[i % len(users)]) for i in range(300)]
        h.publish(second)
        everything = [e["request_id"] for e in first + second]
        h.wait_booked(everything, timeout=240)
    finally:
        h.stop_worker()
    assert h.dead_letters() == []
    assert h.booked(everything) == len(everything)
    with psycopg.connect(seeded_db) as conn:
        assert reconcile(conn) == []
    ours = [h.usage_topic, h.dlq_topic, h.alerts_topic]
    replicas = describe(h.bootstrap, ours)
    assert set(replicas) == set(ours)
    for topic, partitions in replicas.items():
        assert all(len(r) == 3 for _, r in partitions.values()), (topic, partitions)
