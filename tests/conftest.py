"""Shared fixtures: the test session runs its own Kafka and PostgreSQL.

The session starts both through `pipeline.ops.devstack` in a temporary state directory on free
ports (the Maven cache stays the machine's, so a warm machine starts in seconds) and stops
them at the end, also when tests fail or the run is interrupted. With DATABASE_URL set,
that server replaces the embedded one. Each test gets its own database and topics.

Fixtures:
- ``stack`` (session): the started stack (`TestStack`); fails loudly if it cannot start.
- ``pg_admin_url`` (session): superuser conninfo of the test server.
- ``kafka_bootstrap`` (session): "127.0.0.1:port" of the test broker.
- ``own_postgres`` (module): superuser conninfo of a PostgreSQL of the module's own, started
  as the stack starts its own (no Kafka), for tests that need a cluster to themselves
  (roles are cluster-wide).
- ``empty_db`` (function): conninfo of a fresh empty database, dropped afterwards.
- ``migrated_db`` (function): conninfo of a fresh database with every migration applied
  (a copy of a template migrated once per session), dropped afterwards.
- ``unique_topic`` (function): ``unique_topic(prefix="t", partitions=1) -> name`` creates
  a topic of its own for the test.
- ``settings_factory`` (function): ``settings_factory(**overrides) -> Settings`` pointing at
  the test stack with per-test topics (created) and worker id; the database defaults to a
  ``migrated_db`` of the test. Overrides use field names (``usage_topic=...``).
"""

from __future__ import annotations

import asyncio
import atexit
import shutil
import signal
import tempfile
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg import sql

from pipeline import compiled
from pipeline.ops import devstack
from pipeline.ops.devstack import postgres
from pipeline.ops.devstack.ports import free_port
from pipeline.ops.devstack.state import StackPaths
from pipeline.settings import Settings

T = TypeVar("T")


def pytest_configure(config: pytest.Config) -> None:
    """No test runs an extension module built from an older source (`pipeline.compiled`)."""
    if stale := compiled.stale():
        pytest.exit(compiled.stale_message(stale), returncode=2)


@dataclass(frozen=True)
class TestStack:
    """The servers of this test session."""

    __test__ = False  # not a test class, despite its name

    kafka_bootstrap: str
    pg_admin_url: str
    settings: Settings
    """The settings the stack was started with (its temporary state directory)."""


def _stop_on_sigterm() -> None:
    """Turn SIGTERM (a CI time limit, say) into KeyboardInterrupt so teardown still runs."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, interrupt)


@pytest.fixture(scope="session")
def stack() -> Iterator[TestStack]:
    base = Settings()  # the test session is an entry point: read the environment once
    # Not under pytest's basetemp: a concurrent pytest session prunes old basetemps, and
    # with them a live server's data directory.
    state_dir = Path(tempfile.mkdtemp(prefix="usage-pipeline-test-stack-"))
    settings = base.model_copy(
        update={
            "state_dir": state_dir,
            "kafka_bootstrap_servers": None,
        }
    )
    _stop_on_sigterm()
    atexit.register(devstack.down, settings)  # last resort, if teardown never runs
    try:
        env = devstack.up(settings)
    except Exception as exc:
        devstack.down(settings)
        pytest.fail(f"the test stack did not start: {exc}", pytrace=False)
    try:
        yield TestStack(env.kafka_bootstrap_servers, env.database_url, settings)
    finally:
        devstack.down(settings)
        atexit.unregister(devstack.down)
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_admin_url(stack: TestStack) -> str:
    return stack.pg_admin_url


@pytest.fixture(scope="session")
def kafka_bootstrap(stack: TestStack) -> str:
    return stack.kafka_bootstrap


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[str]:
    paths = StackPaths.of(Path(tempfile.mkdtemp(prefix="usage-pipeline-test-postgres-")))
    try:
        port = free_port()
        pid = postgres.start(paths, port)
        postgres.wait_ready(paths, pid, port)
        yield postgres.conninfo(port)
    finally:
        postgres.stop(paths)
        shutil.rmtree(paths.root, ignore_errors=True)


def _create_database(admin_url: str, name: str, template: str | None = None) -> str:
    return postgres.create_database(admin_url, name, template, timeout=10)


def _drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _database_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def empty_db(pg_admin_url: str) -> Iterator[str]:
    name = _database_name("test")
    url = _create_database(pg_admin_url, name)
    try:
        yield url
    finally:
        _drop_database(pg_admin_url, name)


@pytest.fixture(scope="session")
def _migrated_template(pg_admin_url: str) -> Iterator[str]:
    from pipeline.schema.migrations import migrate

    name = _database_name("template")
    url = _create_database(pg_admin_url, name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true").format(sql.Identifier(name))
            )
        yield name
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(sql.Identifier(name))
            )
        _drop_database(pg_admin_url, name)


@pytest.fixture(scope="session")
def new_books(pg_admin_url: str, _migrated_template: str) -> Iterator[Callable[[], str]]:
    """Fresh databases of the migrated schema with the seed's reference data, each a copy
    of one template made once per session."""
    from pipeline.schema import seed

    template = _database_name("seeded")
    url = _create_database(pg_admin_url, template, template=_migrated_template)
    with psycopg.connect(url) as conn:
        seed.seed(conn)
    made: list[str] = []

    def make() -> str:
        made.append(_database_name("books"))
        return _create_database(pg_admin_url, made[-1], template=template)

    try:
        yield make
    finally:
        for name in [*made, template]:
            _drop_database(pg_admin_url, name)


@pytest.fixture
def seeded_db(new_books: Callable[[], str]) -> str:
    """A fresh database of the migrated schema with the seed's reference data."""
    return new_books()


@pytest.fixture
def migrated_db(pg_admin_url: str, _migrated_template: str) -> Iterator[str]:
    name = _database_name("test")
    url = _create_database(pg_admin_url, name, template=_migrated_template)
    try:
        yield url
    finally:
        _drop_database(pg_admin_url, name)


def _run_async(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


async def _create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError, for_code

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics(
            [
                NewTopic(name, partitions, replication_factor=1)
                for name, partitions in topics.items()
            ]
        )
    finally:
        await admin.close()
    for name, code, *message in response.topic_errors:
        if code not in (0, TopicAlreadyExistsError.errno):
            raise for_code(code)(f"creating topic {name}: {message}")


def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    """Create each topic (name -> partitions) that does not exist yet."""
    _run_async(lambda: _create_topics(bootstrap, topics))


@pytest.fixture
def unique_topic(kafka_bootstrap: str) -> Callable[..., str]:
    def make(prefix: str = "t", partitions: int = 1) -> str:
        name = f"{prefix}.{uuid.uuid4().hex[:12]}"
        create_topics(kafka_bootstrap, {name: partitions})
        return name

    return make


def _aliased(values: dict[str, Any]) -> dict[str, Any]:
    """Field names to the environment names `Settings` validates by."""
    out = {}
    for field, value in values.items():
        alias = Settings.model_fields[field].validation_alias
        out[alias if isinstance(alias, str) else field] = value
    return out


@pytest.fixture
def settings_factory(stack: TestStack, request: pytest.FixtureRequest) -> Callable[..., Settings]:
    tag = uuid.uuid4().hex[:10]

    def make(**overrides: Any) -> Settings:
        unknown = set(overrides) - set(Settings.model_fields)
        if unknown:
            raise TypeError(f"unknown settings: {sorted(unknown)}")
        values = stack.settings.model_dump() | {
            "kafka_bootstrap_servers": stack.kafka_bootstrap,
            "usage_topic": f"usage.{tag}",
            "dlq_topic": f"dlq.{tag}",
            "alerts_topic": f"alerts.{tag}",
            "worker_id": f"worker-{tag}",
            "worker_web_port": free_port(),
        }
        values |= overrides
        if "database_url" not in overrides:
            values["database_url"] = request.getfixturevalue("migrated_db")
        settings = Settings.model_validate(_aliased(values))
        create_topics(
            stack.kafka_bootstrap,
            {
                settings.usage_topic: settings.topic_partitions,
                settings.dlq_topic: 1,
                settings.alerts_topic: 1,
            },
        )
        return settings

    return make
