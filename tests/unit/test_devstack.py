"""The local stack's pure decisions: configs, ids, state files, env lines; and its errors."""

from __future__ import annotations

import base64
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict

from pipeline import settings
from pipeline.cli import main
from pipeline.ops.devstack import kafka_config, postgres, process, stack, stack_logins, toolchain
from pipeline.ops.devstack.ports import free_ports, port_is_free
from pipeline.ops.devstack.stack_errors import INSTALL_HINT, ToolMissing
from pipeline.ops.devstack.state import (
    Ports,
    StackPaths,
    parse_ports,
    render_ports,
    write_atomically,
)
from pipeline.ops.devstack.waiting import wait_until

PATHS = StackPaths.of(Path("/srv/state"))


def parse_java_properties(text: str) -> dict[str, str]:
    """Enough of java.util.Properties.load to read back what we render."""
    entries = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, raw = line.partition("=")
            entries[key] = unescape_java(raw.lstrip(" "))
    return entries


def unescape_java(raw: str) -> str:
    out, i = [], 0
    while i < len(raw):
        if raw[i] == "\\" and raw[i + 1] == "u":
            out.append(chr(int(raw[i + 2 : i + 6], 16)))
            i += 6
        elif raw[i] == "\\":
            out.append(raw[i + 1])
            i += 2
        else:
            out.append(raw[i])
            i += 1
    return "".join(out).encode("utf-16", "surrogatepass").decode("utf-16")


# --- kafka configuration -------------------------------------------------------------------


def test_server_properties_make_one_kraft_node_on_loopback_only() -> None:
    config = dict(kafka_config.server_properties(Path("/srv/data"), 19092, 19093, 4))
    assert config["process.roles"] == "broker,controller"
    assert config["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert config["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert config["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert config["log.dirs"] == "/srv/data"
    assert config["num.partitions"] == "4"
    assert config["offsets.topic.replication.factor"] == "1"
    assert config["transaction.state.log.replication.factor"] == "1"
    assert config["transaction.state.log.min.isr"] == "1"
    assert config["group.initial.rebalance.delay.ms"] == "0"
    addresses = config["listeners"] + config["advertised.listeners"]
    assert "0.0.0.0" not in addresses and "localhost" not in addresses


def test_log4j2_config_logs_to_the_given_file() -> None:
    config = dict(kafka_config.log4j2_properties(Path("/srv/state/kafka/server.log")))
    assert config["appender.server.fileName"] == "/srv/state/kafka/server.log"
    assert config["rootLogger.appenderRef.server.ref"] == "server"


@given(st.text(max_size=40))
def test_rendered_properties_read_back_unchanged(value: str) -> None:
    text = kafka_config.render_properties([("some.key", value)], "header")
    assert text.startswith("# header\n")
    assert text.isascii()
    assert parse_java_properties(text) == {"some.key": value}


def test_escape_property_handles_backslashes_spaces_and_non_ascii() -> None:
    assert kafka_config.escape_property("C:\\data") == "C:\\\\data"
    assert kafka_config.escape_property(" lead") == "\\ lead"
    assert kafka_config.escape_property("é") == "\\u00e9"
    assert kafka_config.escape_property("😀") == "\\ud83d\\ude00"


@given(st.binary(min_size=16, max_size=16))
def test_cluster_id_is_a_kafka_uuid_that_is_no_command_line_option(raw: bytes) -> None:
    cluster_id = kafka_config.cluster_id(raw)
    assert len(cluster_id) == 22
    assert cluster_id[0] not in "-_"
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_cluster_id_needs_16_bytes() -> None:
    with pytest.raises(ValueError):
        kafka_config.cluster_id(b"short")


def test_broker_argv_runs_kafka_with_a_small_heap_and_our_configs() -> None:
    argv = kafka_config.broker_argv("/usr/bin/java", ["/a.jar", "/b.jar"], PATHS)
    assert argv[0] == "/usr/bin/java"
    assert "-Xmx512m" in argv
    assert f"-Dlog4j2.configurationFile={PATHS.kafka_log4j}" in argv
    assert argv[argv.index("-cp") + 1] == f"/a.jar{os.pathsep}/b.jar"
    assert argv[-2:] == ["kafka.Kafka", str(PATHS.kafka_properties)]


# --- toolchain -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment', 17),
        ('java version "1.8.0_392"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ('openjdk version "23-ea" 2024-09-17', 23),
        ("bash: java: command not found", None),
    ],
)
def test_java_major_version(output: str, major: int | None) -> None:
    assert toolchain.java_major_version(output) == major


def test_classpath_cache_is_used_only_for_the_same_pom() -> None:
    key = toolchain.pom_key(b"<project/>")
    text = toolchain.render_classpath_cache(key, ["/a.jar", "/b.jar"])
    assert toolchain.parse_classpath_cache(text, key) == ["/a.jar", "/b.jar"]
    assert toolchain.parse_classpath_cache(text, toolchain.pom_key(b"<changed/>")) is None
    assert toolchain.parse_classpath_cache("", key) is None
    assert toolchain.parse_classpath_cache(f"{key}\n\n", key) is None


def test_the_repository_pom_pins_a_kafka_4_release() -> None:
    version = stack.kafka_version(toolchain.DEFAULT_POM.read_text())
    assert version.startswith("4."), version


def test_missing_java_is_one_line_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ToolMissing) as caught:
        toolchain.require_java()
    message = str(caught.value)
    assert "\n" not in message
    assert "java not found" in message
    assert "apt-get install -y maven openjdk-17-jdk-headless" in message


def test_missing_maven_is_one_line_with_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ToolMissing) as caught:
        toolchain.classpath(StackPaths.of(tmp_path), toolchain.DEFAULT_POM, lambda _: None)
    assert "\n" not in str(caught.value)
    assert "mvn not found" in str(caught.value)
    assert "apt-get install -y maven" in str(caught.value)


def test_dev_up_without_java_says_so_in_one_line_and_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    result = CliRunner().invoke(
        main, ["dev", "up"], env={"USAGE_PIPELINE_STATE_DIR": str(tmp_path), "DATABASE_URL": None}
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: java not found on PATH; install a JDK 17+: {INSTALL_HINT}"
    ]
    assert result.exc_info is not None and result.exc_info[0] is SystemExit


@pytest.mark.parametrize("command", ["up", "down", "status", "env"])
def test_each_dev_command_has_help(command: str) -> None:
    result = CliRunner().invoke(main, ["dev", command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output


def test_dev_env_without_a_stack_says_how_to_start_it(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["dev", "env"],
        env={
            "USAGE_PIPELINE_STATE_DIR": str(tmp_path),
            "DATABASE_URL": None,
            "KAFKA_BOOTSTRAP_SERVERS": None,
        },
    )
    assert result.exit_code == 1
    assert "usage-pipeline dev up" in result.output
    assert len(result.output.strip().splitlines()) == 1


# --- postgres ------------------------------------------------------------------------------

POSTMASTER_PID = "\n".join(
    [
        "4583",
        "/srv/state/postgres/data",
        "1795567200",
        "54199",
        "",
        "127.0.0.1",
        "  8826964     65536",
        "ready   ",
        "",
    ]
)


def test_postmaster_pid_gives_pid_port_and_status() -> None:
    info = postgres.parse_postmaster_pid(POSTMASTER_PID)
    assert info == postgres.Postmaster(pid=4583, port=54199, status="ready")


def test_a_postmaster_pid_still_being_written_has_no_port_yet() -> None:
    assert postgres.parse_postmaster_pid("4583\n/srv\n") == postgres.Postmaster(4583, None, "")
    assert postgres.parse_postmaster_pid("") is None


def test_postgres_listens_on_loopback_tcp_only() -> None:
    options = shlex.split(postgres.server_options(5499))
    assert options == [
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        "port=5499",
        "-c",
        "unix_socket_directories=",
    ]
    assert postgres.conninfo(5499) == "postgresql://postgres@127.0.0.1:5499/postgres"


# --- state, env lines, status --------------------------------------------------------------


def test_ports_record_round_trips_and_ignores_garbage() -> None:
    ports = Ports(kafka=9092, kafka_controller=9093, postgres=None)
    assert parse_ports(render_ports(ports)) == ports
    assert parse_ports("not json") == Ports()
    assert parse_ports("[1, 2]") == Ports()
    assert parse_ports('{"kafka": "9092", "postgres": 70000, "kafka_controller": true}') == Ports()


def test_pid_file_text() -> None:
    assert process.parse_pid("123\n") == 123
    assert process.parse_pid("") is None
    assert process.parse_pid("abc") is None
    assert process.parse_pid("0") is None


def test_env_lines_are_what_a_shell_reads_back() -> None:
    env = stack.StackEnv("127.0.0.1:9092", "postgresql://u:p w'd@127.0.0.1:5/db")
    lines = stack.env_lines(env)
    assert lines[0] == "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092"
    assert [shlex.split(line)[0] for line in lines] == [
        "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092",
        "DATABASE_URL=postgresql://u:p w'd@127.0.0.1:5/db",
    ]
    assert all(line.startswith("export ") for line in stack.env_lines(env, export=True))
    script = "\n".join(stack.env_lines(env, export=True)) + '\nprintf %s "$DATABASE_URL"'
    shell = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    assert shell.stdout == env.database_url


LOGINS = stack_logins.login_urls(
    postgres.conninfo(5499),
    {"usage_worker": "w-secret", "usage_finance": "f-secret", "usage_api": "a-secret"},
)


def test_env_lines_name_the_logins_after_the_owner() -> None:
    env = stack.StackEnv("127.0.0.1:9092", postgres.conninfo(5499), LOGINS)
    names = [line.split("=", 1)[0] for line in stack.env_lines(env)]
    assert names == [
        "KAFKA_BOOTSTRAP_SERVERS",
        "DATABASE_URL",
        "WORKER_DATABASE_URL",
        "FINANCE_DATABASE_URL",
        "API_DATABASE_URL",
    ]
    worker = conninfo_to_dict(shlex.split(stack.env_lines(env)[2])[0].split("=", 1)[1])
    assert (worker["user"], worker["password"], worker["port"]) == (
        "usage_worker",
        "w-secret",
        "5499",
    )
    assert "secret" not in str(env) and "usage_worker" in str(env)
    assert "secret" not in str(stack.StackEnv("k:1", "postgresql://app:secret@db/x"))


def test_login_passwords_read_back_and_garbage_is_left_out() -> None:
    passwords = {"usage_worker": "a", "usage_finance": "b"}
    assert stack_logins.parse_passwords(stack_logins.render_passwords(passwords)) == passwords
    assert stack_logins.parse_passwords("not json") == {}
    assert stack_logins.parse_passwords("[1]") == {}
    garbage = '{"usage_worker": 7, "usage_finance": "", "postgres": "x"}'
    assert stack_logins.parse_passwords(garbage) == {}


def test_logins_are_known_only_with_every_password(tmp_path: Path) -> None:
    paths = StackPaths.of(tmp_path)
    assert stack_logins.known(paths, postgres.conninfo(5499)) is None
    write_atomically(paths.login_passwords, '{"usage_worker": "w-secret"}')
    assert stack_logins.known(paths, postgres.conninfo(5499)) is None
    # a stack made before the API's login: known again once an `up` has made it
    text = '{"usage_worker": "w-secret", "usage_finance": "f-secret"}'
    write_atomically(paths.login_passwords, text)
    assert stack_logins.known(paths, postgres.conninfo(5499)) is None
    write_atomically(paths.login_passwords, text[:-1] + ', "usage_api": "a-secret"}')
    assert stack_logins.known(paths, postgres.conninfo(5499)) == LOGINS


def test_a_private_file_is_only_its_owners_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "secret.env"
    path.write_text("old")
    path.chmod(0o644)
    write_atomically(path, "new", private=True)
    assert (path.read_text(), path.stat().st_mode & 0o777) == ("new", 0o600)


def test_the_worker_finds_its_login_in_stack_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = stack.StackEnv("127.0.0.1:9092", postgres.conninfo(5499), LOGINS)
    (tmp_path / settings.STACK_ENV).write_text("\n".join(stack.env_lines(env)) + "\n")
    for name in ("DATABASE_URL", "WORKER_DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("USAGE_PIPELINE_STATE_DIR", str(tmp_path))
    found = settings.from_environment()
    assert found.worker_database_url == LOGINS.worker_database_url
    assert found.database_url == postgres.conninfo(5499)


def test_database_url_naming_our_own_server_is_not_external() -> None:
    ours = Ports(postgres=5499)
    assert stack.external_database(None, ours) is None
    assert stack.external_database(postgres.conninfo(5499), ours) is None
    assert stack.external_database("postgresql://db.internal/x", ours) == (
        "postgresql://db.internal/x"
    )


def test_redact_hides_the_password() -> None:
    assert stack.redact("postgresql://app:secret@db.internal:6432/books") == (
        "db.internal:6432/books"
    )


def test_describe_says_what_runs_where() -> None:
    status = stack.StackStatus(
        Path("/srv/state"),
        stack.ComponentStatus("kafka", stack.State.RUNNING, "127.0.0.1:9092", 10, Path("/k.log")),
        stack.ComponentStatus("postgres", stack.State.STOPPED),
    )
    assert stack.describe(status) == [
        "kafka: running at 127.0.0.1:9092 (pid 10), log /k.log",
        "postgres: stopped",
        "state directory: /srv/state",
    ]
    assert not status.usable


# --- ports, waiting, processes -------------------------------------------------------------


def test_free_ports_are_distinct_keep_free_preferences_and_avoid_promised_ones() -> None:
    (preferred,) = free_ports(1)
    ports = free_ports(3, (preferred, preferred), avoid=frozenset({1}))
    assert len(set(ports)) == 3
    assert ports[0] == preferred
    assert 1 not in ports
    assert all(port_is_free(p) for p in ports)


def test_wait_until_returns_once_true_or_after_the_deadline() -> None:
    calls = iter([False, False, True])
    assert wait_until(lambda: next(calls), timeout=5, interval=0.01)
    began = time.monotonic()
    assert not wait_until(lambda: False, timeout=0.2, interval=0.05)
    assert 0.2 <= time.monotonic() - began < 2


def test_a_detached_process_is_found_and_terminated(tmp_path: Path) -> None:
    marker = f"devstack-test-{tmp_path.name}"
    pid = process.spawn_detached(
        [sys.executable, "-c", "import signal; signal.pause()", marker], tmp_path / "out.log"
    )
    assert process.is_alive(pid)
    assert process.runs_with(pid, marker)
    assert not process.runs_with(pid, "some-other-marker")
    assert process.terminate(pid, grace=5)
    assert not process.is_alive(pid)


def test_terminate_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    code = (
        "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ignoring', flush=True)\nwhile True: signal.pause()"
    )
    output = tmp_path / "out.log"
    pid = process.spawn_detached([sys.executable, "-c", code], output)
    assert wait_until(lambda: "ignoring" in output.read_text(), timeout=30)
    began = time.monotonic()
    assert process.terminate(pid, grace=0.5)
    assert 0.5 <= time.monotonic() - began < 10
    assert not process.is_alive(pid)
