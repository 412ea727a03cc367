"""The local stack as a whole: `up`, `down`, `status` and the addresses the pipeline uses.

Kafka always runs locally; PostgreSQL runs locally unless ``DATABASE_URL`` names another
server. On the local one `up` also applies the migrations and makes the stack's own logins
(`stack_logins`); a server of ``DATABASE_URL`` is left as it is. `up` is idempotent (a
running server is reused, never started twice) and undoes what it started if a later step
fails, so a failed `up` leaves no process behind.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from pipeline.errors import PipelineError
from pipeline.ops.devstack import kafka, postgres, stack_logins, toolchain
from pipeline.ops.devstack.ports import LOOPBACK, free_ports
from pipeline.ops.devstack.stack_errors import StackNotRunning
from pipeline.ops.devstack.stack_logins import StackLogins
from pipeline.ops.devstack.state import (
    Ports,
    StackPaths,
    locked,
    read_ports,
    write_atomically,
    write_ports,
)
from pipeline.settings import STACK_ENV, Settings

START_HINT = "start it with `usage-pipeline dev up`"


@dataclass(frozen=True)
class StackEnv:
    """The addresses a pipeline process needs, as its environment variables name them."""

    kafka_bootstrap_servers: str
    database_url: str
    """The owner's (the local server's superuser, or the DATABASE_URL given)."""
    logins: StackLogins | None = None
    """The stack's own logins on the local server; None on a server of DATABASE_URL."""

    def __str__(self) -> str:
        """For people: the addresses, never a password."""
        text = f"kafka {self.kafka_bootstrap_servers}, postgres {redact(self.database_url)}"
        if self.logins is not None:
            text += f" (logins {', '.join(stack_logins.ROLES)})"
        return text


def env_lines(env: StackEnv, export: bool = False) -> list[str]:
    """Shell-sourceable ``NAME=value`` lines (``export NAME=value`` with ``export``)."""
    values = {
        "KAFKA_BOOTSTRAP_SERVERS": env.kafka_bootstrap_servers,
        "DATABASE_URL": env.database_url,
    }
    if env.logins is not None:
        values["WORKER_DATABASE_URL"] = env.logins.worker_database_url
        values["FINANCE_DATABASE_URL"] = env.logins.finance_database_url
        values["API_DATABASE_URL"] = env.logins.api_database_url
    prefix = "export " if export else ""
    return [f"{prefix}{name}={shlex.quote(value)}" for name, value in values.items()]


class State(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    EXTERNAL = "external"
    """Not ours: the server named by DATABASE_URL."""


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    state: State
    address: str | None = None
    pid: int | None = None
    log: Path | None = None


@dataclass(frozen=True)
class StackStatus:
    state_dir: Path
    kafka: ComponentStatus
    postgres: ComponentStatus

    @property
    def usable(self) -> bool:
        """Whether the pipeline has both servers to talk to."""
        return all(c.state is not State.STOPPED for c in (self.kafka, self.postgres))


def describe(status: StackStatus) -> list[str]:
    """One line per component, for people."""
    lines = []
    for component in (status.kafka, status.postgres):
        line = f"{component.name}: {component.state}"
        if component.address:
            line += f" at {component.address}"
        if component.pid is not None:
            line += f" (pid {component.pid})"
        if component.log is not None and component.state is State.RUNNING:
            line += f", log {component.log}"
        lines.append(line)
    lines.append(f"state directory: {status.state_dir}")
    return lines


def redact(url: str) -> str:
    """A conninfo without its password, for printing."""
    try:
        params = conninfo_to_dict(url)
    except Exception:  # any unparsable string: show nothing of it
        return "(unparsable DATABASE_URL)"
    host, port, dbname = params.get("host", ""), params.get("port", ""), params.get("dbname", "")
    return f"{host}{':' if port else ''}{port}/{dbname}"


def external_database(database_url: str | None, ports: Ports) -> str | None:
    """The configured DATABASE_URL unless it names this stack's own server (as it does
    after `eval "$(usage-pipeline dev env --export)"`)."""
    if database_url is None:
        return None
    if ports.postgres is not None and database_url == postgres.conninfo(ports.postgres):
        return None
    return database_url


def kafka_version(pom_text: str) -> str:
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom_text)
    return match.group(1).strip() if match else "?"


def _quiet(message: str) -> None:
    del message


@dataclass(frozen=True)
class _Server:
    pid: int
    port: int
    started: bool
    """Started by this `up` (so a failure later in `up` stops it again)."""


def up(
    settings: Settings,
    *,
    pom: Path = toolchain.DEFAULT_POM,
    progress: Callable[[str], None] = _quiet,
) -> StackEnv:
    """Start whatever is not running, wait until both servers accept connections, and return
    their addresses. A server that already runs is reused, never started twice."""
    paths = StackPaths.of(settings.state_dir)
    with locked(paths):
        recorded = read_ports(paths)
        external = external_database(settings.database_url, recorded)
        undo: list[Callable[[], object]] = []
        try:
            began = time.monotonic()
            broker, controller_port = _start_kafka(paths, recorded, settings, pom, progress)
            if broker.started:
                undo.append(lambda: kafka.stop(paths))
            # PostgreSQL starts while the broker's JVM boots.
            server = None
            db_url = external
            if db_url is None:
                avoid = frozenset({broker.port, controller_port})
                server = _start_postgres(paths, recorded, avoid, progress)
                if server.started:
                    undo.append(lambda: postgres.stop(paths))
                db_url = postgres.conninfo(server.port)
            pg_port = server.port if server is not None else recorded.postgres
            write_ports(paths, Ports(broker.port, controller_port, pg_port))
            made = None
            if server is not None:
                postgres.wait_ready(paths, server.pid, server.port)
                made = _make_logins(paths, db_url, progress)  # while the broker boots
            else:
                progress(
                    f"postgres: DATABASE_URL names a database of its own ({redact(db_url)}); no "
                    "logins made there: its owner makes them with `usage-pipeline db grant-login`"
                )
            kafka.wait_ready(paths, broker.pid, broker.port)
            addresses = StackEnv(f"{LOOPBACK}:{broker.port}", db_url, made)
            _record_addresses(paths, addresses)
            progress(f"stack: ready in {time.monotonic() - began:.1f}s")
        except BaseException:
            for step in reversed(undo):
                step()
            raise
    return addresses


def _make_logins(
    paths: StackPaths, owner_url: str, progress: Callable[[str], None]
) -> StackLogins | None:
    """The local server's schema and logins; a failure (a migration edited since it was
    applied, say) is said, and the stack comes up without them so it can be fixed."""
    try:
        return stack_logins.make(paths, owner_url, progress)
    except PipelineError as exc:
        progress(f"postgres: no logins made: {exc}; fix it, then `usage-pipeline dev up` again")
        return None


def _record_addresses(paths: StackPaths, addresses: StackEnv) -> None:
    """Where the pipeline's commands find this stack (`pipeline.settings.from_environment`):
    the worker finds its login there. Private, as it holds the logins' passwords."""
    text = "\n".join(env_lines(addresses)) + "\n"
    write_atomically(paths.root / STACK_ENV, text, private=True)


def _start_kafka(
    paths: StackPaths,
    recorded: Ports,
    settings: Settings,
    pom: Path,
    progress: Callable[[str], None],
) -> tuple[_Server, int]:
    """The broker (started unless it runs) and its controller port."""
    pid = kafka.running_pid(paths)
    if pid is not None and recorded.kafka is not None and recorded.kafka_controller is not None:
        progress(f"kafka: already running at {LOOPBACK}:{recorded.kafka} (pid {pid})")
        return _Server(pid, recorded.kafka, started=False), recorded.kafka_controller
    if pid is not None:
        kafka.stop(paths)  # runs, but its ports record is gone: restart it to know them
    avoid = frozenset(p for p in (recorded.postgres,) if p is not None)
    port, controller = free_ports(2, (recorded.kafka, recorded.kafka_controller), avoid)
    version = kafka_version(pom.read_text()) if pom.is_file() else "?"
    pid = kafka.start(paths, port, controller, settings.topic_partitions, pom, progress)
    progress(f"kafka: starting {version} at {LOOPBACK}:{port} (pid {pid}, log {paths.kafka_log})")
    return _Server(pid, port, started=True), controller


def _start_postgres(
    paths: StackPaths, recorded: Ports, avoid: frozenset[int], progress: Callable[[str], None]
) -> _Server:
    info = postgres.running(paths)
    if info is not None and info.port is not None:
        progress(f"postgres: already running at {LOOPBACK}:{info.port} (pid {info.pid})")
        return _Server(info.pid, info.port, started=False)
    (port,) = free_ports(1, (recorded.postgres,), avoid)
    pid = postgres.start(paths, port)
    progress(f"postgres: started at {LOOPBACK}:{port} (pid {pid}, log {paths.postgres_log})")
    return _Server(pid, port, started=True)


def down(settings: Settings) -> list[str]:
    """Stop this state directory's servers; return what was stopped, for people. The data,
    and the passwords of the stack's logins with it, stay."""
    paths = StackPaths.of(settings.state_dir)
    stopped: list[str] = []
    with locked(paths):
        (paths.root / STACK_ENV).unlink(missing_ok=True)
        try:
            if kafka.stop(paths):
                stopped.append("kafka")
        finally:
            # PostgreSQL is stopped even when Kafka would not stop.
            if postgres.stop(paths):
                stopped.append("postgres")
    return stopped


def restart_postgres(settings: Settings, while_down: Callable[[], object] | None = None) -> None:
    """Stop this state directory's PostgreSQL and start it again on the same port with the
    same data, running ``while_down`` in between (a fault drill watches the pipeline there).

    `down` + `up` could move the server: its port stays unbindable for our free-port probe
    while closed connections linger, though the server itself rebinds it (SO_REUSEADDR).
    """
    paths = StackPaths.of(settings.state_dir)
    with locked(paths):
        port = read_ports(paths).postgres
        if port is None or postgres.running(paths) is None:
            raise StackNotRunning(f"PostgreSQL is not running: {START_HINT}")
        postgres.stop(paths)
        if while_down is not None:
            while_down()
        pid = postgres.start(paths, port)
        postgres.wait_ready(paths, pid, port)


def restart_kafka(
    settings: Settings,
    while_down: Callable[[], object] | None = None,
    *,
    pom: Path = toolchain.DEFAULT_POM,
) -> None:
    """Stop this state directory's broker and start it again on the same ports with the same
    log directories, running ``while_down`` in between."""
    paths = StackPaths.of(settings.state_dir)
    with locked(paths):
        ports = read_ports(paths)
        if ports.kafka is None or ports.kafka_controller is None or not kafka.running_pid(paths):
            raise StackNotRunning(f"Kafka is not running: {START_HINT}")
        kafka.stop(paths)
        if while_down is not None:
            while_down()
        pid = kafka.start(
            paths, ports.kafka, ports.kafka_controller, settings.topic_partitions, pom, _quiet
        )
        kafka.wait_ready(paths, pid, ports.kafka)


def status(settings: Settings) -> StackStatus:
    paths = StackPaths.of(settings.state_dir)
    ports = read_ports(paths)
    pid = kafka.running_pid(paths)
    if pid is not None and ports.kafka is not None:
        broker = ComponentStatus(
            "kafka", State.RUNNING, f"{LOOPBACK}:{ports.kafka}", pid, paths.kafka_log
        )
    else:
        broker = ComponentStatus("kafka", State.STOPPED)
    external = external_database(settings.database_url, ports)
    info = postgres.running(paths)
    if external is not None:
        database = ComponentStatus("postgres", State.EXTERNAL, redact(external))
    elif info is not None:
        address = f"{LOOPBACK}:{info.port}" if info.port else None
        database = ComponentStatus("postgres", State.RUNNING, address, info.pid, paths.postgres_log)
    else:
        database = ComponentStatus("postgres", State.STOPPED)
    return StackStatus(paths.root, broker, database)


def _database_url(settings: Settings) -> str:
    """DATABASE_URL if set, else the running local server's; StackNotRunning otherwise."""
    if settings.database_url is not None:
        return settings.database_url
    info = postgres.running(StackPaths.of(settings.state_dir))
    if info is None or info.port is None:
        raise StackNotRunning(
            f"PostgreSQL is not running and DATABASE_URL is not set: {START_HINT}"
        )
    return postgres.conninfo(info.port)


def _kafka_bootstrap(settings: Settings) -> str:
    """KAFKA_BOOTSTRAP_SERVERS if set, else the running local broker's address;
    StackNotRunning otherwise."""
    if settings.kafka_bootstrap_servers is not None:
        return settings.kafka_bootstrap_servers
    paths = StackPaths.of(settings.state_dir)
    port = read_ports(paths).kafka
    if port is None or kafka.running_pid(paths) is None:
        raise StackNotRunning(
            f"Kafka is not running and KAFKA_BOOTSTRAP_SERVERS is not set: {START_HINT}"
        )
    return f"{LOOPBACK}:{port}"


def env(settings: Settings) -> StackEnv:
    """The addresses `up` printed: the configured ones, else the running stack's; with the
    stack's logins when the database is the local server."""
    bootstrap, database_url = _kafka_bootstrap(settings), _database_url(settings)
    paths = StackPaths.of(settings.state_dir)
    ours = external_database(settings.database_url, read_ports(paths)) is None
    made = stack_logins.known(paths, database_url) if ours else None
    return StackEnv(bootstrap, database_url, made)
