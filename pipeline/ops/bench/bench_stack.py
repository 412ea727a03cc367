"""The benchmark's own stack and databases, never the user's dev stack.

A Kafka + PostgreSQL started by `pipeline.ops.devstack` in a temporary state directory on free
loopback ports, with PostgreSQL's ``track_commit_timestamp`` on, so every ledger row's
commit time is exact (``pg_xact_commit_timestamp(xmin)``). One template database is
migrated, seeded, loaded with the LiteLLM price catalog and the bench users (with
subscriptions and credits); every runner gets a fresh copy of it, so books never mix.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pipeline.money import prices
from pipeline.ops import devstack
from pipeline.ops.demo import users as demo
from pipeline.ops.demo.sample import DemoUser
from pipeline.ops.devstack import postgres, toolchain
from pipeline.ops.devstack.stack import kafka_version
from pipeline.ops.devstack.state import StackPaths, locked, read_ports
from pipeline.schema import migrations, seed
from pipeline.settings import Settings

TEMPLATE = "bench_template"
PRICES_EFFECTIVE_DAYS_AGO = 30
"""Imported prices start well before the latest late event."""


@dataclass(frozen=True)
class BenchStack:
    settings: Settings
    """Settings of the bench stack (its temporary state directory)."""
    bootstrap: str
    admin_url: str

    def database(self, name: str) -> str:
        """A fresh copy of the template database named `name`; its conninfo."""
        return postgres.create_database(self.admin_url, name, TEMPLATE)

    def drop(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def postmaster_pid(self) -> int | None:
        info = postgres.running(StackPaths.of(self.settings.state_dir))
        return info.pid if info is not None else None


@contextmanager
def bench_stack(base: Settings, progress: Callable[[str], None]) -> Iterator[BenchStack]:
    """Start a dedicated stack with commit timestamps on; stop and remove it afterwards."""
    state_dir = Path(tempfile.mkdtemp(prefix="usage-pipeline-bench-"))
    settings = base.model_copy(
        update={"state_dir": state_dir, "kafka_bootstrap_servers": None, "database_url": None}
    )
    try:
        env = devstack.up(settings, progress=progress)
        _enable_commit_timestamps(settings, env.database_url)
        yield BenchStack(settings, env.kafka_bootstrap_servers, env.database_url)
    finally:
        devstack.down(settings)
        shutil.rmtree(state_dir, ignore_errors=True)


def _enable_commit_timestamps(settings: Settings, admin_url: str) -> None:
    """``track_commit_timestamp`` needs a restart: set it, restart on the same port, check."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET track_commit_timestamp = on")
    paths = StackPaths.of(settings.state_dir)
    with locked(paths):
        port = read_ports(paths).postgres
        assert port is not None, "the bench stack's PostgreSQL has no recorded port"
        postgres.stop(paths)
        pid = postgres.start(paths, port)
        postgres.wait_ready(paths, pid, port)
    with psycopg.connect(admin_url) as conn:
        row = conn.execute("SHOW track_commit_timestamp").fetchone()
    if row is None or row[0] != "on":
        raise RuntimeError("track_commit_timestamp did not turn on in the bench stack")


def prepare_template(
    stack: BenchStack, catalog: Path, users: tuple[DemoUser, ...], now: datetime
) -> prices.ImportReport:
    """Create the template: migrations, seed, the price catalog, the bench users."""
    with psycopg.connect(stack.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    url = make_conninfo(stack.admin_url, dbname=TEMPLATE)
    with psycopg.connect(url) as conn:
        migrations.migrate(conn)
        seed.seed(conn)
        report = prices.import_litellm(
            conn, catalog, now - timedelta(days=PRICES_EFFECTIVE_DAYS_AGO)
        )
        demo.setup_users(conn, users, now)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return report


def machine(stack: BenchStack) -> dict[str, Any]:
    """What the numbers were measured on."""
    with psycopg.connect(stack.admin_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    pom = toolchain.DEFAULT_POM
    return {
        "cpu": _cpu_model(),
        "cores": _cores(),
        "memory_gib": round(_memory_kib() / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgres": row[0] if row else "?",
        "kafka": kafka_version(pom.read_text()) if pom.is_file() else "?",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def _memory_kib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
