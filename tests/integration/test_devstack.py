"""The local stack for real: the session's broker speaks to aiokafka, and the `dev` commands
start, reuse, print and stop a stack of their own without leaving a process behind."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pipeline.ops import devstack
from pipeline.ops.devstack import kafka, process
from pipeline.ops.devstack.state import StackPaths
from pipeline.schema.migrations import load_migrations
from pipeline.settings import Settings
from tests.conftest import TestStack

pytestmark = pytest.mark.integration


async def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for index, value in enumerate(values):
            await producer.send_and_wait(topic, value, key=str(index % 3).encode())
    finally:
        await producer.stop()


async def consume(bootstrap: str, topic: str, group: str, count: int) -> list[bytes]:
    """Read ``count`` records as member of ``group`` and commit their offsets."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        async with asyncio.timeout(60):
            while len(values) < count:
                batches = await consumer.getmany(timeout_ms=500)
                values += [r.value for records in batches.values() for r in records if r.value]
        await consumer.commit()
    finally:
        await consumer.stop()
    return values


async def committed(bootstrap: str, topic: str, group: str, partitions: int) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        return {
            p: offset
            for p in range(partitions)
            if (offset := await consumer.committed(TopicPartition(topic, p))) is not None
        }
    finally:
        await consumer.stop()


def test_records_go_through_the_broker_and_a_group_commits(
    kafka_bootstrap: str, unique_topic: Callable[..., str]
) -> None:
    topic = unique_topic("devstack", partitions=3)
    values = [f"event-{i}".encode() for i in range(30)]
    asyncio.run(produce(kafka_bootstrap, topic, values))

    received = asyncio.run(consume(kafka_bootstrap, topic, f"group-{topic}", len(values)))

    assert sorted(received) == sorted(values)
    offsets = asyncio.run(committed(kafka_bootstrap, topic, f"group-{topic}", 3))
    assert sum(offsets.values()) == len(values)
    # A new member of the group starts after the committed offsets: nothing left to read.
    asyncio.run(produce(kafka_bootstrap, topic, [b"late"]))
    assert asyncio.run(consume(kafka_bootstrap, topic, f"group-{topic}", 1)) == [b"late"]


def test_up_again_reuses_the_running_broker(stack: TestStack) -> None:
    paths = StackPaths.of(stack.settings.state_dir)
    before = kafka.running_pid(paths)

    env = devstack.up(stack.settings)

    assert env.kafka_bootstrap_servers == stack.kafka_bootstrap
    assert env.database_url == stack.pg_admin_url
    assert kafka.running_pid(paths) == before
    assert len(processes_mentioning(str(paths.kafka_properties))) == 1


def test_each_test_gets_its_own_databases(empty_db: str, migrated_db: str) -> None:
    assert empty_db != migrated_db
    with psycopg.connect(empty_db) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchone() == (0,)
    with psycopg.connect(migrated_db) as conn:
        applied = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
        assert applied == (len(load_migrations()),)


async def topic_partitions(bootstrap: str, topics: list[str]) -> dict[str, int]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}


def test_settings_factory_points_at_the_test_stack_with_topics_of_its_own(
    stack: TestStack, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(topic_partitions=2, batch_max_events="7")

    assert settings.kafka_bootstrap_servers == stack.kafka_bootstrap
    assert settings.batch_max_events == 7
    topics = [settings.usage_topic, settings.dlq_topic, settings.alerts_topic]
    assert len(set(topics)) == 3
    assert asyncio.run(topic_partitions(stack.kafka_bootstrap, topics)) == {
        settings.usage_topic: 2,
        settings.dlq_topic: 1,
        settings.alerts_topic: 1,
    }
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as conn:
        applied = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
        assert applied == (len(load_migrations()),)


# --- the `dev` commands, on a stack of their own --------------------------------------------


def processes_mentioning(text: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline and process.is_alive(int(entry.name)):
                found.append(int(entry.name))
    return found


@pytest.fixture
def own_state_dir(stack: TestStack, tmp_path: Path) -> Iterator[Path]:
    """A second state directory, sharing the session's resolved Kafka classpath."""
    state = tmp_path / "state"
    session_paths, paths = StackPaths.of(stack.settings.state_dir), StackPaths.of(state)
    paths.kafka.mkdir(parents=True)
    shutil.copy(session_paths.kafka_classpath, paths.kafka_classpath)
    yield state
    subprocess.run(cli("down"), env=cli_env(state, stack), capture_output=True, check=False)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", "dev", *args]


def cli_env(state: Path, stack: TestStack) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"KAFKA_BOOTSTRAP_SERVERS"}}
    env["USAGE_PIPELINE_STATE_DIR"] = str(state)
    if stack.settings.database_url is None:
        env.pop("DATABASE_URL", None)
    return env


def test_dev_commands_start_reuse_print_and_stop_leaving_nothing(
    stack: TestStack, own_state_dir: Path
) -> None:
    env = cli_env(own_state_dir, stack)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cli(*args), env=env, capture_output=True, text=True, check=False, timeout=180
        )

    first = run("up")
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert [line.split("=", 1)[0] for line in lines] == [
        "KAFKA_BOOTSTRAP_SERVERS",
        "DATABASE_URL",
    ]
    brokers = processes_mentioning(f"{own_state_dir}/kafka/server.properties")
    assert len(brokers) == 1

    second = run("up")
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    assert "already running" in second.stderr
    assert processes_mentioning(f"{own_state_dir}/kafka/server.properties") == brokers

    printed = run("env")
    assert printed.stdout == first.stdout
    sourced = subprocess.run(
        [
            "bash",
            "-c",
            'set -euo pipefail; eval "$1"; echo "$KAFKA_BOOTSTRAP_SERVERS|$DATABASE_URL"',
            "bash",
            run("env", "--export").stdout,
        ],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=True,
    )
    assert sourced.stdout.strip() == "|".join(line.split("=", 1)[1] for line in lines)
    database_url = lines[1].split("=", 1)[1]
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)

    status = run("status")
    assert status.returncode == 0, status.stdout
    assert status.stdout.startswith("kafka: running at ")

    down = run("down")
    assert down.returncode == 0, down.stderr
    assert processes_mentioning(str(own_state_dir)) == []
    assert run("status").returncode == 3
    after = run("env")
    assert after.returncode == 1
    assert "usage-pipeline dev up" in after.stderr
    assert "Traceback" not in after.stderr
