"""The chaos drill's edges: worker processes, the paced publisher, the SQL reads of the
price snapshot before the run and of the books after it, the workers' live view, and the
SQL that makes the server read-only for a while."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg

from pipeline.books import reference
from pipeline.core import records
from pipeline.core.live_usage import DayTotals
from pipeline.core.pricing import MarginConfig
from pipeline.money.reconcile import reconcile
from pipeline.ops.chaos.verdict import Observed, PriceBook, Totals
from pipeline.ops.devstack.ports import free_port
from pipeline.ops.worker_process import kill_worker, retries_since, start_worker, stop_worker
from pipeline.stream import kafka_io
from pipeline.stream.booker import LoggedRetry
from pipeline.stream.kafka_access import KafkaAccess

PUBLISH_CHUNK = 100
HELD_BACK = 0.1
"""The share of the sample published only after the last fault."""


class Worker:
    """One `python -m pipeline worker` of the group, with its own web port and state dir."""

    def __init__(self, name: str, env: dict[str, str], state_dir: Path) -> None:
        self.name = name
        self.env = env
        self.state_dir = state_dir
        self.log = state_dir / "worker.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.down_on_purpose = False

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        env = self.env | {
            "WORKER_WEB_PORT": str(self.port),
            "USAGE_PIPELINE_STATE_DIR": str(self.state_dir),
        }
        self.process = start_worker(env, self.log, start_new_session=True)
        self.down_on_purpose = False

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def kill(self) -> None:
        if self.process is not None:
            kill_worker(self.process)

    def stop(self) -> None:
        if self.process is not None:
            stop_worker(self.process)

    def log_size(self) -> int:
        return self.log.stat().st_size if self.log.is_file() else 0

    def retries_since(self, offset: int) -> list[LoggedRetry]:
        """The batch retries (pipeline.stream.booker) the worker logged after ``offset``."""
        return retries_since(self.log, offset)


class Publisher(threading.Thread):
    """Publishes the sample in chunks at a steady pace, like gateways would; a chunk the
    broker did not take is sent again once it is back (its events become redeliveries).

    The last ``HELD_BACK`` of the sample waits for `release`, so every fault strikes while
    part of the replay is still to come; `let_through` sends a chunk of it sooner.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        lines: list[bytes],
        seconds: float,
        note: Callable[[str], None],
        batch: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(name="chaos-publisher", daemon=True)
        self.bootstrap, self.topic, self.lines = bootstrap, topic, lines
        self.batch = batch
        """(partitions, events per record): publish each chunk as batch records."""
        self.pause = seconds * PUBLISH_CHUNK / max(1, len(lines))
        self.note = note
        self.halt = threading.Event()
        self.release = threading.Event()
        self.held_from = int(len(lines) * (1 - HELD_BACK))

    def run(self) -> None:
        for start in range(0, len(self.lines), PUBLISH_CHUNK):
            while start >= self.held_from and not self.release.wait(0.2):
                if self.halt.is_set():
                    return
            self.send(self.lines[start : start + PUBLISH_CHUNK])
            if self.halt.wait(self.pause):
                return

    def let_through(self) -> None:
        """Hold one chunk fewer back: a fault that needs a batch in flight while it lasts
        (read-only PostgreSQL) gets one even when the workers have booked all the rest."""
        self.held_from = min(len(self.lines), self.held_from + PUBLISH_CHUNK)

    def send(self, chunk: list[bytes]) -> None:
        """Publish one chunk, trying again each second until the broker takes it."""
        keyed = [(kafka_io.user_key(x), x) for x in chunk]
        if self.batch is not None:
            keyed = records.group_by_partition(keyed, *self.batch)
        outgoing = [(key, value, list[tuple[str, bytes]]()) for key, value in keyed]
        failures = 0
        while not self.halt.is_set():
            try:
                asyncio.run(kafka_io.publish(KafkaAccess(self.bootstrap), self.topic, outgoing))
            except Exception as exc:
                if not failures:
                    self.note(f"publishing fails ({type(exc).__name__}); trying every second")
                failures += 1
                self.halt.wait(1.0)
                continue
            if failures:
                self.note(f"publishing resumed after {failures} failed attempts")
            return


def set_read_only(database_url: str, read_only: bool) -> None:
    """Make the whole server refuse writes (SQLSTATE 25006), or take them again.

    The server's default, changed by ALTER SYSTEM and a configuration reload, reaches the
    sessions already open (the workers' pooled connections) at their next transaction,
    as a primary turned standby would, without ending them. It binds every database of
    the server: the drill's server is its own.
    """
    with psycopg.connect(database_url, autocommit=True) as conn:
        if read_only:
            conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        else:
            conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
        conn.execute("SELECT pg_reload_conf()")


def price_book(conn: psycopg.Connection[Any]) -> PriceBook:
    """The providers, prices and approved margins in force, read before the run with the
    worker's own SQL (the oracle resolves margins its own way, over this list)."""
    return PriceBook(
        reference.providers_by_name(conn.execute(reference.PROVIDERS_SQL)),
        reference.prices_by_model(conn.execute(reference.PRICES_SQL)),
        [MarginConfig(*row) for row in conn.execute(reference.MARGINS_SQL)],
    )


def observe(conn: psycopg.Connection[Any], letters: Counter[tuple[bytes, str]]) -> Observed:
    """What the books hold now, per request and per user."""
    usage: Counter[Any] = Counter(
        dict(conn.execute("SELECT request_id, count(*) FROM token_usage_ledger GROUP BY 1"))
    )
    deductions: Counter[Any] = Counter(
        dict(
            conn.execute(
                "SELECT request_id, count(*) FROM credit_deduction_ledger "
                "WHERE request_id IS NOT NULL GROUP BY 1"
            )
        )
    )
    totals = {
        row[0]: Totals(*row[1:])
        for row in conn.execute(
            """
            SELECT u.id, count(l.id), coalesce(sum(l.input_tokens), 0),
                   coalesce(sum(l.output_tokens), 0), coalesce(sum(l.vendor_cost), 0),
                   coalesce(sum(l.credits_deducted), 0), coalesce(min(b.amount), 0)
            FROM users u
            LEFT JOIN token_usage_ledger l ON l.user_id = u.id
            LEFT JOIN user_credit_balance b ON b.user_id = u.id
            GROUP BY u.id
            """
        )
    }
    violations = [str(v) for v in reconcile(conn)]
    return Observed(usage, deductions, letters, violations, totals)


def live_view(port: int, user: UUID, timeout: float) -> tuple[str, DayTotals] | None:
    """The day and `user`'s usage of it in the live view of the worker on `port`, asked
    until it answers 200 (a worker rebalancing answers 503) or `timeout` passes."""
    url = f"http://127.0.0.1:{port}/users/{user}/usage/today"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = json.load(response)
            return body["day"], DayTotals.from_json(body)
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                return None
            time.sleep(0.5)


def ledger_day(conn: psycopg.Connection[Any], day: str) -> dict[UUID, DayTotals]:
    """Each user's ledger rows of one UTC day (of the request's start, as the view counts)."""
    return {
        row[0]: DayTotals(*row[1:])
        for row in conn.execute(
            """
            SELECT user_id, count(*), sum(input_tokens), sum(output_tokens),
                   sum(credits_deducted), sum(vendor_cost)
            FROM token_usage_ledger
            WHERE (request_started_at AT TIME ZONE 'UTC')::date = %s::date
            GROUP BY user_id
            """,
            (day,),
        )
    }
