"""Drive the real worker through real topics: a process, its database, its topics."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupCoordinatorNotAvailableError

from pipeline.ops.devstack.waiting import wait_until
from pipeline.ops.worker_process import kill_worker, retries_since, start_worker, stop_worker
from pipeline.stream import dlq, kafka_io
from pipeline.stream.booker import LoggedRetry
from pipeline.stream.kafka_access import KafkaAccess, client_options

REPO = Path(__file__).resolve().parents[2]
PARTITIONS = 2
"""Of each usage topic."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    """The first truthy value of `predicate`, polled by devstack's `wait_until`."""
    seen: list[Any] = [None]

    def holds() -> bool:
        seen[0] = predicate()
        return bool(seen[0])

    if wait_until(holds, timeout, interval=0.2):
        return seen[0]
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Harness:
    database_url: str
    bootstrap: str
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    env_overrides: dict[str, str] = field(default_factory=dict)
    worker: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    access: KafkaAccess | None = None
    """How the harness itself reaches Kafka (default: PLAINTEXT at `bootstrap`)."""

    def kafka(self) -> KafkaAccess:
        return self.access or KafkaAccess(self.bootstrap)

    @property
    def usage_topic(self) -> str:
        return f"usage.{self.tag}"

    @property
    def dlq_topic(self) -> str:
        return f"dlq.{self.tag}"

    @property
    def alerts_topic(self) -> str:
        return f"alerts.{self.tag}"

    @property
    def worker_id(self) -> str:
        """The worker's WORKER_ID, also its consumer group (`env_overrides` may set it)."""
        return self.env_overrides.get("WORKER_ID", f"worker-{self.tag}")

    def env(self) -> dict[str, str]:
        """The worker's environment; `env_overrides` win over these defaults. The worker's
        login is the test's database too, never a `dev up` stack's left in the checkout."""
        return (
            dict(
                os.environ,
                DATABASE_URL=self.database_url,
                WORKER_DATABASE_URL=self.database_url,
                KAFKA_BOOTSTRAP_SERVERS=self.bootstrap,
                USAGE_TOPIC=self.usage_topic,
                DLQ_TOPIC=self.dlq_topic,
                ALERTS_TOPIC=self.alerts_topic,
                WORKER_ID=self.worker_id,
                WORKER_WEB_PORT=str(free_port()),
                LOW_BALANCE_CREDITS="100",
                TOPIC_PARTITIONS=str(PARTITIONS),
            )
            | self.env_overrides
        )

    def start_worker(self, log_dir: Path) -> None:
        self.log_path = log_dir / f"worker-{self.tag}.log"
        self.worker = start_worker(self.env(), self.log_path, cwd=REPO)

    def kill_worker(self, sig: int = signal.SIGKILL) -> None:
        assert self.worker is not None
        kill_worker(self.worker, sig)

    def stop_worker(self) -> int | None:
        """SIGTERM the worker (SIGKILL after a grace period); its exit code."""
        return stop_worker(self.worker) if self.worker is not None else None

    def publish(self, events: Sequence[dict[str, Any] | bytes]) -> None:
        lines = [e if isinstance(e, bytes) else json.dumps(e).encode() for e in events]
        self.publish_records([(kafka_io.user_key(x), x) for x in lines])

    def publish_records(self, records: list[tuple[bytes | None, bytes]]) -> None:
        """(key, value) records as they are, e.g. batch records."""
        asyncio.run(kafka_io.ensure_topic(self.kafka(), self.usage_topic, PARTITIONS))
        asyncio.run(
            kafka_io.publish(self.kafka(), self.usage_topic, ((k, v, []) for k, v in records))
        )

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path and self.log_path.is_file() else 0

    def retries_since(self, offset: int) -> list[LoggedRetry]:
        """The batch retries the worker logged after the first `offset` bytes of its log."""
        return retries_since(self.log_path, offset) if self.log_path else []

    def acknowledged(self) -> dict[int, int]:
        """The worker group's committed offset of each usage partition it committed."""

        async def read() -> tuple[dict[int, int]] | None:
            admin = AIOKafkaAdminClient(**client_options(self.kafka()))
            await admin.start()
            try:
                committed = await admin.list_consumer_group_offsets(self.worker_id)
            except GroupCoordinatorNotAvailableError:  # the broker is still electing it
                return None
            finally:
                await admin.close()
            return ({
                tp.partition: meta.offset
                for tp, meta in committed.items()
                if tp.topic == self.usage_topic and meta.offset >= 0
            },)  # fmt: skip

        [offsets] = wait_for(lambda: asyncio.run(read()), 30, "the group's coordinator")
        return offsets

    def published(self) -> dict[int, int]:
        """The end offset of each usage partition that holds records."""

        async def read() -> dict[int, int]:
            tps = [TopicPartition(self.usage_topic, p) for p in range(PARTITIONS)]
            consumer = AIOKafkaConsumer(**client_options(self.kafka()))
            await consumer.start()
            try:
                ends = await consumer.end_offsets(tps)
            finally:
                await consumer.stop()
            return {tp.partition: int(end) for tp, end in ends.items() if end > 0}

        return asyncio.run(read())

    def read(self, topic: str) -> list[kafka_io.Record]:
        async def collect() -> list[kafka_io.Record]:
            return [r async for r in kafka_io.read_all(self.kafka(), topic)]

        return asyncio.run(collect())

    def dead_letters(self) -> list[dlq.DeadLetter]:
        return [dlq.from_record(r.headers, r.key, r.value) for r in self.read(self.dlq_topic)]

    def alerts(self) -> list[dict[str, Any]]:
        return [json.loads(r.value or b"{}") for r in self.read(self.alerts_topic)]

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database_url) as conn:
            return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]

    def booked(self, request_ids: Sequence[uuid.UUID | str]) -> int:
        ids = [str(r) for r in request_ids]
        return int(
            self.query(
                "SELECT count(*) FROM token_usage_ledger WHERE request_id::text = ANY(%s)", ids
            )[0][0]
        )

    def worker_sessions(self) -> list[tuple[Any, ...]]:
        """(login, over TLS) of the other sessions on this database: the worker's, once it
        has connected (waited for)."""
        return list(wait_for(
            lambda: self.query(
                "SELECT DISTINCT a.usename, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s "
                "USING (pid) WHERE a.datname = current_database() AND a.usename <> current_user"
            ),
            30,
            "the worker's sessions",
        ))  # fmt: skip

    def alive(self) -> bool:
        if self.worker is not None and self.worker.poll() is not None:
            log = self.log_path.read_text()[-3000:] if self.log_path else ""
            raise AssertionError(f"worker exited with {self.worker.returncode}:\n{log}")
        return True

    def wait_booked(self, request_ids: list[Any], timeout: float = 90.0) -> None:
        wait_for(
            lambda: self.alive() and self.booked(request_ids) == len(set(map(str, request_ids))),
            timeout,
            f"{len(request_ids)} requests in the ledger (worker log: {self.log_path})",
        )


def make_event(user_id: Any, **over: Any) -> dict[str, Any]:
    started = over.pop("started_at", datetime.now(UTC) - timedelta(seconds=30))
    event = {
        "request_id": str(uuid.uuid4()),
        "user_id": str(user_id),
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": 1000,
        "output_tokens": 2000,
        "started_at": started.isoformat(),
        "completed_at": (started + timedelta(seconds=2)).isoformat(),
    }
    event.update(over)
    return event
