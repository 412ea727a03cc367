"""The local Kafka broker: a single KRaft node run from its Maven Central jars.

Storage is formatted once with Kafka's own `StorageTool`; the broker then runs detached as
`java -cp ... kafka.Kafka server.properties` with its pid in a pid file, and counts as up
once it answers a metadata request. Stopping is SIGTERM, then SIGKILL after a deadline.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from pipeline.ops.devstack import process, toolchain
from pipeline.ops.devstack.kafka_config import (
    SecureListeners,
    broker_argv,
    cluster_id,
    log4j2_properties,
    render_properties,
    scram_arguments,
    server_properties,
)
from pipeline.ops.devstack.ports import LOOPBACK, accepts_connections
from pipeline.ops.devstack.stack_errors import StackError
from pipeline.ops.devstack.state import StackPaths, write_atomically
from pipeline.ops.devstack.waiting import wait_until

START_TIMEOUT = 90.0
STOP_GRACE = 30.0


def running_pid(paths: StackPaths) -> int | None:
    """The pid of this state directory's broker if it runs."""
    pid = process.read_pid(paths.kafka_pid)
    if pid is not None and process.runs_with(pid, str(paths.kafka_properties)):
        return pid
    return None


def format_storage(
    java: str,
    entries: Sequence[str],
    paths: StackPaths,
    random16: bytes,
    scram: Sequence[str] = (),
) -> None:
    """Format the broker's storage unless it was formatted before, with the SCRAM users of
    `scram` (StorageTool's `--add-scram` arguments): KRaft keeps them in its metadata."""
    if (paths.kafka_data / "meta.properties").is_file():
        return
    result = subprocess.run(
        [
            java,
            "-Xmx256m",
            f"-Dlog4j2.configurationFile={paths.kafka_log4j}",
            "-cp",
            os.pathsep.join(entries),
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            cluster_id(random16),
            "--config",
            str(paths.kafka_properties),
            *scram,
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise StackError(f"Kafka storage format failed: {last[0]}")


def start(
    paths: StackPaths,
    port: int,
    controller_port: int,
    partitions: int,
    pom: Path,
    progress: toolchain.Progress,
    secure: SecureListeners | None = None,
) -> int:
    """Write the configs, format storage once, and spawn the broker; return its pid.
    With `secure`, the broker also serves SASL_SSL and mutual TLS; its SCRAM users are
    made when the storage is formatted (so on the first start of a state directory).

    Does not wait: see `wait_ready`.
    """
    properties = server_properties(paths.kafka_data, port, controller_port, partitions, secure)
    scram = scram_arguments(secure.users) if secure is not None else []
    java = toolchain.require_java()
    entries = toolchain.classpath(paths, pom, progress)
    return start_node(paths, properties, java, entries, os.urandom(16), scram)


def start_node(
    paths: StackPaths,
    properties: list[tuple[str, str]],
    java: str,
    entries: Sequence[str],
    random16: bytes,
    scram: Sequence[str] = (),
) -> int:
    """Write `properties`, format storage once (cluster id from `random16`, the same for
    every node of a cluster), and spawn the node with `java` on classpath `entries`;
    return its pid."""
    paths.kafka_data.mkdir(parents=True, exist_ok=True)
    header = "Written by `usage-pipeline dev up` at every start; edits are overwritten."
    write_atomically(paths.kafka_properties, render_properties(properties, header))
    write_atomically(
        paths.kafka_log4j, render_properties(log4j2_properties(paths.kafka_log), header)
    )
    format_storage(java, entries, paths, random16, scram)
    pid = process.spawn_detached(broker_argv(java, entries, paths), paths.kafka_stdout)
    write_atomically(paths.kafka_pid, f"{pid}\n")
    return pid


def wait_ready(paths: StackPaths, pid: int, port: int, timeout: float = START_TIMEOUT) -> None:
    """Wait until the broker answers a metadata request naming itself; raise if it dies or
    the deadline passes."""
    bootstrap = f"{LOOPBACK}:{port}"

    def ready() -> bool:
        if not process.is_alive(pid):
            raise StackError(f"Kafka exited while starting; see {_log_hint(paths)}")
        return accepts_connections(port) and asyncio.run(_answers_metadata(bootstrap))

    if not wait_until(ready, timeout, interval=0.25):
        raise StackError(
            f"Kafka did not accept a metadata request within {timeout:.0f}s; see {_log_hint(paths)}"
        )


async def _answers_metadata(bootstrap: str) -> bool:
    from aiokafka.client import AIOKafkaClient
    from aiokafka.errors import KafkaError

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await client.bootstrap()
        return bool(client.cluster.brokers())
    except (KafkaError, OSError):
        return False
    finally:
        await client.close()


def _log_hint(paths: StackPaths) -> str:
    for log in (paths.kafka_stdout, paths.kafka_log):
        lines = log.read_text(errors="replace").strip().splitlines() if log.is_file() else []
        errors = [line for line in lines if " ERROR " in line or "Exception" in line]
        if errors:
            return f"{log} ({errors[-1].strip()[:200]})"
    return str(paths.kafka_log)


def stop(paths: StackPaths, grace: float = STOP_GRACE) -> bool:
    """Stop this state directory's broker (SIGTERM, SIGKILL after ``grace`` seconds).

    Returns True if one was running.
    """
    pid = running_pid(paths)
    if pid is not None and not process.terminate(pid, grace):
        raise StackError(f"Kafka (pid {pid}) did not exit after SIGKILL")
    paths.kafka_pid.unlink(missing_ok=True)
    return pid is not None
