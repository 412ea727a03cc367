"""The chaos drill: replay generated traffic through real workers while breaking things.

On a stack of its own (a temporary state directory, free loopback ports) the drill seeds
the demo users, publishes a generated sample at a steady pace and, at random points of the
replay (waiting on the ledger's progress, never on the clock alone), kills workers with
SIGKILL, kills one of the two workers of the consumer group and runs on the survivor,
restarts PostgreSQL, makes PostgreSQL read-only for a while and restarts the Kafka broker.
Once the topic is drained it compares
the books with `chaos_verdict.expect`. Everything it started is stopped on the way out,
also on a timeout, an error or Ctrl-C.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg.errors import ReadOnlySqlTransaction

from pipeline.ops import devstack
from pipeline.ops.chaos.edges import (
    HELD_BACK,
    Publisher,
    Worker,
    ledger_day,
    live_view,
    observe,
    price_book,
    set_read_only,
)
from pipeline.ops.chaos.verdict import (
    KILL,
    KILL_ONE_OF_TWO,
    READ_ONLY_POSTGRES,
    RESTART_KAFKA,
    RESTART_POSTGRES,
    Check,
    expect,
    fault_plan,
    live_view_check,
    survivor_goal,
    verdict,
)
from pipeline.ops.demo import sample
from pipeline.ops.demo import users as demo
from pipeline.ops.devstack.stack import restart_kafka, restart_postgres
from pipeline.ops.devstack.waiting import wait_until
from pipeline.schema import logins, migrations, seed
from pipeline.settings import Settings
from pipeline.stream import kafka_io
from pipeline.stream.kafka_access import KafkaAccess

WORKERS = 2
GROUP = "usage-pipeline-chaos"
SECONDS_PER_FAULT = 4.0
LIVE_VIEW_WAIT_SECONDS = 30.0
"""How long a worker may answer the live view with 503 (rebalancing) after the drain."""
READ_ONLY_SECONDS = (3.0, 30.0)
"""How long PostgreSQL stays read-only: at least the first, and until a worker has been
seen retrying a batch it refused, at most the second. The most covers a worker that is
still rejoining the group after an earlier fault (about 10 s with dynamic membership):
the batch let through waits for it, and it must meet the read-only database."""


class ChaosTimeout(Exception):
    """The run's deadline passed while the drill waited for something."""


@dataclass(frozen=True)
class ChaosConfig:
    events: int
    kills: int
    seed: int
    timeout: float
    partitions: int = 4
    batch: int | None = None
    """Publish batch records of up to this many events (`records.group_by_partition`)."""


@dataclass
class Timeline:
    progress: Callable[[str], None]
    started: float = field(default_factory=time.monotonic)
    faults: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def note(self, kind: str, text: str) -> None:
        line = f"[{time.monotonic() - self.started:6.1f}s] {kind:<9}{text}"
        self.lines.append(line)
        if kind == "fault":
            self.faults.append(line)
        self.progress(line)


@dataclass(frozen=True)
class ChaosReport:
    timeline: list[str]
    faults: list[str]
    checks: list[Check]
    elapsed: float
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.checks) and all(c.passed for c in self.checks)


class Drill:
    """One run: the stack, the workers, the publisher and the faults."""

    def __init__(self, settings: Settings, config: ChaosConfig, timeline: Timeline) -> None:
        self.config = config
        self.timeline = timeline
        self.rng = random.Random(config.seed)
        self.deadline = time.monotonic() + config.timeout
        self.root = Path(tempfile.mkdtemp(prefix="usage-pipeline-chaos-"))
        self.settings = settings.model_copy(
            update={
                "state_dir": self.root / "stack",
                "database_url": None,
                "kafka_bootstrap_servers": None,
                "topic_partitions": config.partitions,
                "worker_id": GROUP,
            }
        )
        self.workers: list[Worker] = []
        self.faults: list[str] = []
        self.publisher: Publisher | None = None
        self.database_url = self.bootstrap = self.worker_database_url = ""

    # --- waiting ----------------------------------------------------------------------

    def wait(self, condition: Callable[[], bool], what: str) -> None:
        """Poll ``condition`` (restarting any worker that died unasked) until it holds."""

        def met() -> bool:
            self.revive_dead_workers()
            return condition()

        if not wait_until(met, self.deadline - time.monotonic(), interval=0.2):
            raise ChaosTimeout(f"the run's {self.config.timeout:.0f}s passed waiting for {what}")

    def revive_dead_workers(self) -> None:
        for worker in self.workers:
            code = worker.exit_code()
            if code is not None and not worker.down_on_purpose:
                self.timeline.note("observed", f"{worker.name} exited with {code}; restarting it")
                worker.start()

    def wait_booked(self, rows: int) -> None:
        self.wait(lambda: self.booked() >= rows, f"{rows} booked rows")

    def booked(self) -> int:
        try:
            with psycopg.connect(self.database_url, connect_timeout=2) as conn:
                row = conn.execute("SELECT count(*) FROM token_usage_ledger").fetchone()
                return int(row[0]) if row else 0
        except psycopg.OperationalError:
            return -1  # PostgreSQL is restarting

    def lag(self) -> int | None:
        try:
            return asyncio.run(
                kafka_io.group_lag(KafkaAccess(self.bootstrap), GROUP, self.settings.usage_topic)
            )
        except Exception:  # the broker is restarting or the group is rebalancing
            return None

    # --- the run ----------------------------------------------------------------------

    def run(self) -> list[Check]:
        note = self.timeline.note
        env = devstack.up(self.settings)
        self.database_url, self.bootstrap = env.database_url, env.kafka_bootstrap_servers
        note("setup", f"stack at {self.root} (kafka {self.bootstrap})")
        now = datetime.now(UTC)
        with psycopg.connect(self.database_url) as conn:
            migrations.migrate(conn)
            seed.seed(conn)
            demo.setup_users(conn, sample.DEMO_USERS, now)
            self.worker_database_url = logins.worker_login_url(conn, self.database_url)
            book = price_book(conn)
        generated = sample.generate(self.config.events, now, seed=self.config.seed)
        expected = expect(
            generated.lines,
            sample.DEMO_USERS,
            book,
            now,
            self.settings.usd_per_credit,
            timedelta(seconds=self.settings.max_future_skew_seconds),
        )
        note(
            "setup",
            f"{len(generated.lines)} events: {len(expected.booked)} to book, "
            f"{expected.duplicates} redelivered, {sum(expected.rejected.values())} to reject",
        )
        asyncio.run(
            kafka_io.ensure_topic(
                KafkaAccess(self.bootstrap), self.settings.usage_topic, self.config.partitions
            )
        )
        self.start_workers()
        self.faults = faults = fault_plan(self.config.kills, self.rng)
        seconds = SECONDS_PER_FAULT * len(faults) + 8
        self.publisher = Publisher(
            self.bootstrap,
            self.settings.usage_topic,
            generated.lines,
            seconds,
            lambda text: self.timeline.note("observed", text),
            (self.config.partitions, self.config.batch) if self.config.batch else None,
        )
        self.publisher.start()
        note("setup", f"publishing over ~{seconds:.0f}s; faults: {len(faults)}")
        total = len(expected.booked)
        last = (1 - HELD_BACK) * 0.9
        marks = sorted(self.rng.uniform(0.05, last) * total for _ in faults)
        floor = 0
        for fault, mark in zip(faults, marks, strict=True):
            self.wait_booked(max(int(mark), floor))
            self.inject(fault, expected.booked_at)
            # The next fault waits for progress made after this one has been recovered from.
            floor = min(int(total * last), self.booked() + max(1, total // 50))
        self.publisher.release.set()
        self.wait(lambda: not self.publisher_alive(), "the publisher to finish")
        self.wait(lambda: self.lag() == 0, "the consumer group to drain the topic")
        note("drained", f"{self.booked()} ledger rows, lag 0")
        view_check = self.check_live_view()
        for worker in self.workers:
            worker.down_on_purpose = True
            worker.stop()
        letters = Counter(
            (x.value or b"", x.reason)
            for x in asyncio.run(
                kafka_io.dead_letters(KafkaAccess(self.bootstrap), self.settings.dlq_topic)
            )
        )
        with psycopg.connect(self.database_url) as conn:
            observed = observe(conn, letters)
        return [*verdict(expected, observed, sample.DEMO_USERS), view_check]

    def check_live_view(self) -> Check:
        """Each demo user's live view of today, asked of a worker after the drain, against
        the ledger's rows of that day."""
        port = next(w.port for w in self.workers if w.exit_code() is None)
        seen = {u.id: live_view(port, u.id, LIVE_VIEW_WAIT_SECONDS) for u in sample.DEMO_USERS}
        days = {answer[0] for answer in seen.values() if answer is not None}
        day = min(days) if days else datetime.now(UTC).date().isoformat()
        with psycopg.connect(self.database_url) as conn:
            ledger = ledger_day(conn, day)
        views = {
            user: answer[1] if answer is not None and answer[0] == day else None
            for user, answer in seen.items()
        }
        return live_view_check(ledger, views, self.faults)

    def publisher_alive(self) -> bool:
        return self.publisher is not None and self.publisher.is_alive()

    def start_workers(self) -> None:
        env = dict(
            os.environ,
            WORKER_DATABASE_URL=self.worker_database_url,  # the worker's own login
            KAFKA_BOOTSTRAP_SERVERS=self.bootstrap,
            USAGE_TOPIC=self.settings.usage_topic,
            DLQ_TOPIC=self.settings.dlq_topic,
            ALERTS_TOPIC=self.settings.alerts_topic,
            TOPIC_PARTITIONS=str(self.config.partitions),
            WORKER_ID=GROUP,
            LIVE_USAGE_VIEW="true",  # checked after the drain (`check_live_view`)
        )
        for index in range(WORKERS):
            worker = Worker(f"worker-{index + 1}", env, self.root / f"worker-{index + 1}")
            worker.start()
            self.workers.append(worker)
        self.timeline.note("setup", f"{WORKERS} workers in consumer group {GROUP}")

    def inject(self, fault: str, booked_at: list[int]) -> None:
        note = self.timeline.note
        total = len(booked_at)
        at = self.booked()
        if fault == KILL:
            worker = self.rng.choice(self.workers)
            pid = worker.process.pid if worker.process else None
            note("fault", f"kill -9 {worker.name} (pid {pid}) at {at}/{total} booked; restart it")
            worker.down_on_purpose = True
            worker.kill()
            worker.start()
        elif fault == KILL_ONE_OF_TWO:
            victim = self.rng.choice(self.workers)
            note("fault", f"kill -9 {victim.name} at {at}/{total} booked; the other runs alone")
            victim.down_on_purpose = True
            victim.kill()
            began = time.monotonic()
            goal = self.survivor_goal(booked_at, at)
            self.wait_booked(goal)
            took = time.monotonic() - began
            note(
                "observed",
                f"the survivor alone reached {self.booked()}/{total} booked in {took:.1f}s; "
                f"restarting {victim.name}",
            )
            victim.start()
        elif fault == RESTART_POSTGRES:
            note("fault", f"restart PostgreSQL at {at}/{total} booked")
            restart_postgres(
                self.settings, while_down=lambda: self.hold_until_retried("PostgreSQL is down")
            )
            note("observed", "PostgreSQL is back on its port")
        elif fault == READ_ONLY_POSTGRES:
            note("fault", f"make PostgreSQL read-only at {at}/{total} booked, for a while")
            began = time.monotonic()
            set_read_only(self.database_url, True)
            if self.publisher is not None:
                self.publisher.let_through()
            try:
                self.hold_until_retried(
                    "PostgreSQL is read-only", ReadOnlySqlTransaction.sqlstate, *READ_ONLY_SECONDS
                )
            finally:
                set_read_only(self.database_url, False)
            took = time.monotonic() - began
            note("observed", f"PostgreSQL is writable again after {took:.1f}s read-only")
        elif fault == RESTART_KAFKA:
            note("fault", f"restart the Kafka broker at {at}/{total} booked")
            restart_kafka(self.settings)
            note("observed", "Kafka is back on its port")

    def survivor_goal(self, booked_at: list[int], at: int) -> int:
        """The rows the survivor must reach alone (`verdict.survivor_goal`), with as much of
        the held-back sample let through as they need."""
        assert self.publisher is not None  # it starts before the first fault
        goal, lines = survivor_goal(booked_at, at, self.publisher.held_from)
        while self.publisher.held_from < lines:
            self.publisher.let_through()
        return goal

    def hold_until_retried(
        self, fault: str, sqlstate: str | None = None, least: float = 0.0, most: float = 5.0
    ) -> None:
        """Hold a fault (return later) for ``least`` seconds and until a worker logs that
        it retries a batch (refused with ``sqlstate``, if given), at most ``most``."""
        began = time.monotonic()
        sizes = {w.name: w.log_size() for w in self.workers}

        def retrying() -> list[str]:
            return [
                w.name
                for w in self.workers
                if any(sqlstate in (None, r.sqlstate) for r in w.retries_since(sizes[w.name]))
            ]

        def held() -> bool:
            return time.monotonic() - began >= least and bool(retrying())

        if wait_until(held, most, interval=0.2):
            names = ", ".join(retrying())
            self.timeline.note("observed", f"{names} retrying its batch while {fault}")
        else:
            self.timeline.note("observed", f"{fault} for {most:.0f}s; no batch was in flight")

    def close(self, keep: bool) -> None:
        """Stop everything this run started; remove its files unless ``keep``."""
        if self.publisher is not None:
            self.publisher.halt.set()
            self.publisher.join(30)
        for worker in self.workers:
            worker.down_on_purpose = True
            worker.stop()
        devstack.down(self.settings)
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)


def run(settings: Settings, config: ChaosConfig, progress: Callable[[str], None]) -> ChaosReport:
    """Run the drill on a stack of its own; the report says what was done and found."""
    timeline = Timeline(progress)
    drill = Drill(settings, config, timeline)
    checks: list[Check] = []
    error: str | None = None
    try:
        checks = drill.run()
    except ChaosTimeout as exc:
        error = str(exc)
    finally:
        failed = error is not None or not checks or not all(c.passed for c in checks)
        if failed:
            progress(f"logs kept in {drill.root}")
        drill.close(keep=failed)
    return ChaosReport(
        timeline.lines, timeline.faults, checks, time.monotonic() - timeline.started, error
    )
