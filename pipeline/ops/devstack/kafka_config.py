"""The local broker's configuration, rendered as pure functions of paths and ports.

`server.properties` makes one combined broker+controller KRaft node that listens on
127.0.0.1 only; `log4j2.properties` sends its logs to one file in the state directory.
With `SecureListeners` the broker also listens as a managed Kafka does: SASL_SSL (PLAIN and
SCRAM users) and SSL with client certificates required (mutual TLS).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.ops.devstack.ports import LOOPBACK
from pipeline.ops.devstack.state import StackPaths

JVM_OPTIONS = (
    # A small heap: the broker shares a 2-core machine with PostgreSQL, workers and tests.
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)


def escape_property(value: str) -> str:
    """``value`` as a java.util.Properties value (read as ISO-8859-1, backslash escapes)."""
    out: list[str] = []
    for index, char in enumerate(value):
        if char == "\\":
            out.append("\\\\")
        elif char == " " and index == 0:
            out.append("\\ ")
        elif ord(char) < 32 or ord(char) > 126:
            out.append(f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else _surrogates(char))
        else:
            out.append(char)
    return "".join(out)


def _surrogates(char: str) -> str:
    encoded = char.encode("utf-16-be")
    high, low = int.from_bytes(encoded[:2], "big"), int.from_bytes(encoded[2:], "big")
    return f"\\u{high:04x}\\u{low:04x}"


def render_properties(entries: Sequence[tuple[str, str]], header: str) -> str:
    lines = [f"# {header}"]
    lines += [f"{key}={escape_property(value)}" for key, value in entries]
    return "\n".join(lines) + "\n"


SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class SecureListeners:
    """Listeners beside PLAINTEXT (which the broker and its tools keep using): SASL_SSL on
    `sasl_ssl_port` and mutual TLS on `ssl_port`, both serving `keystore_pem`."""

    sasl_ssl_port: int
    ssl_port: int
    keystore_pem: Path
    """The broker's private key (unencrypted PKCS#8) and certificate chain, PEM."""
    client_ca_pem: Path
    """The CA whose client certificates the mutual-TLS listener accepts."""
    users: Mapping[str, str]
    """SASL user -> password, for PLAIN and both SCRAM mechanisms."""


def scram_arguments(users: Mapping[str, str]) -> list[str]:
    """StorageTool's `--add-scram` arguments: every user under both SCRAM mechanisms."""
    for name, password in users.items():
        if not all(c.isalnum() or c in "-_" for c in name + password):
            raise ValueError(f"SCRAM user {name!r}: names and passwords take [A-Za-z0-9_-] only")
    return [
        argument
        for mechanism in SCRAM_MECHANISMS
        for name, password in users.items()
        for argument in ("--add-scram", f"{mechanism}=[name={name},password={password}]")
    ]


def _secure_entries(secure: SecureListeners) -> list[tuple[str, str]]:
    plain_users = " ".join(f'user_{name}="{pw}"' for name, pw in secure.users.items())
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    entries = [
        ("sasl.enabled.mechanisms", ",".join(("PLAIN", *SCRAM_MECHANISMS))),
        (
            "listener.name.sasl_ssl.plain.sasl.jaas.config",
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};",
        ),
        *[
            (f"listener.name.sasl_ssl.{m.lower()}.sasl.jaas.config", scram)
            for m in SCRAM_MECHANISMS
        ],
        ("listener.name.ssl.ssl.client.auth", "required"),
        ("listener.name.ssl.ssl.truststore.type", "PEM"),
        ("listener.name.ssl.ssl.truststore.location", str(secure.client_ca_pem)),
    ]
    for listener in ("sasl_ssl", "ssl"):
        entries += [
            (f"listener.name.{listener}.ssl.keystore.type", "PEM"),
            (f"listener.name.{listener}.ssl.keystore.location", str(secure.keystore_pem)),
        ]
    return entries


def server_properties(
    data_dir: Path,
    port: int,
    controller_port: int,
    partitions: int,
    secure: SecureListeners | None = None,
) -> list[tuple[str, str]]:
    """The broker's configuration: one combined broker+controller node on 127.0.0.1."""
    served = [f"PLAINTEXT://{LOOPBACK}:{port}"]
    protocols = ["PLAINTEXT:PLAINTEXT"]
    if secure is not None:
        served += [f"SASL_SSL://{LOOPBACK}:{secure.sasl_ssl_port}"]
        served += [f"SSL://{LOOPBACK}:{secure.ssl_port}"]
        protocols += ["SASL_SSL:SASL_SSL", "SSL:SSL"]
    return [
        ("process.roles", "broker,controller"),
        ("node.id", "1"),
        ("controller.quorum.voters", f"1@{LOOPBACK}:{controller_port}"),
        ("listeners", ",".join([*served, f"CONTROLLER://{LOOPBACK}:{controller_port}"])),
        ("advertised.listeners", ",".join(served)),
        ("listener.security.protocol.map", ",".join([*protocols, "CONTROLLER:PLAINTEXT"])),
        ("inter.broker.listener.name", "PLAINTEXT"),
        ("controller.listener.names", "CONTROLLER"),
        ("log.dirs", str(data_dir)),
        *_broker_defaults(partitions, replicas=1),
        *(_secure_entries(secure) if secure is not None else []),
    ]


def _broker_defaults(partitions: int, replicas: int) -> list[tuple[str, str]]:
    """What every broker of ours sets, in a cluster of `replicas` brokers."""
    min_isr = str(max(1, replicas - 1))  # a broker may be down and producers go on
    return [
        # On: producers (the demo, gateways) may publish before a worker exists, and an
        # auto-created topic gets TOPIC_PARTITIONS partitions, as the pipeline would make it.
        ("auto.create.topics.enable", "true"),
        ("num.partitions", str(partitions)),
        ("default.replication.factor", str(replicas)),
        ("min.insync.replicas", min_isr),
        ("offsets.topic.replication.factor", str(replicas)),
        ("offsets.topic.num.partitions", "8"),
        ("transaction.state.log.replication.factor", str(replicas)),
        ("transaction.state.log.min.isr", min_isr),
        ("transaction.state.log.num.partitions", "8"),
        ("share.coordinator.state.topic.replication.factor", str(replicas)),
        ("share.coordinator.state.topic.min.isr", min_isr),
        # A single member joins at once instead of waiting 3 s for others.
        ("group.initial.rebalance.delay.ms", "0"),
        ("num.network.threads", "2"),
        ("num.io.threads", "4"),
        ("num.recovery.threads.per.data.dir", "1"),
    ]


CONTROLLER_NODE = 1
"""The node id of a cluster's controller; its brokers are 2, 3, ..."""


def controller_properties(data_dir: Path, controller_port: int) -> list[tuple[str, str]]:
    """The controller of a cluster (`broker_properties`): KRaft metadata only, no clients."""
    return [
        ("process.roles", "controller"),
        ("node.id", str(CONTROLLER_NODE)),
        ("controller.quorum.voters", f"{CONTROLLER_NODE}@{LOOPBACK}:{controller_port}"),
        ("listeners", f"CONTROLLER://{LOOPBACK}:{controller_port}"),
        ("listener.security.protocol.map", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"),
        ("controller.listener.names", "CONTROLLER"),
        ("log.dirs", str(data_dir)),
        ("num.recovery.threads.per.data.dir", "1"),
    ]


def broker_properties(
    node_id: int, data_dir: Path, port: int, controller_port: int, partitions: int, brokers: int
) -> list[tuple[str, str]]:
    """Broker `node_id` of a cluster of `brokers` brokers, replicating every topic to all."""
    return [
        ("process.roles", "broker"),
        ("node.id", str(node_id)),
        ("controller.quorum.voters", f"{CONTROLLER_NODE}@{LOOPBACK}:{controller_port}"),
        ("listeners", f"PLAINTEXT://{LOOPBACK}:{port}"),
        ("advertised.listeners", f"PLAINTEXT://{LOOPBACK}:{port}"),
        ("listener.security.protocol.map", "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"),
        ("inter.broker.listener.name", "PLAINTEXT"),
        ("controller.listener.names", "CONTROLLER"),
        ("log.dirs", str(data_dir)),
        *_broker_defaults(partitions, replicas=brokers),
    ]


def log4j2_properties(log_file: Path) -> list[tuple[str, str]]:
    """Log4j2 configuration: everything at INFO into one size-rolled file."""
    return [
        ("status", "warn"),
        ("appender.server.type", "RollingFile"),
        ("appender.server.name", "server"),
        ("appender.server.fileName", str(log_file)),
        ("appender.server.filePattern", f"{log_file}.%i"),
        ("appender.server.layout.type", "PatternLayout"),
        ("appender.server.layout.pattern", "[%d] %p %m (%c)%n"),
        ("appender.server.policies.type", "Policies"),
        ("appender.server.policies.size.type", "SizeBasedTriggeringPolicy"),
        ("appender.server.policies.size.size", "50MB"),
        ("appender.server.strategy.type", "DefaultRolloverStrategy"),
        ("appender.server.strategy.max", "3"),
        ("rootLogger.level", "INFO"),
        ("rootLogger.appenderRef.server.ref", "server"),
        ("logger.request.name", "kafka.request.logger"),
        ("logger.request.level", "WARN"),
    ]


def cluster_id(random16: bytes) -> str:
    """A Kafka cluster id (a base64url UUID) from 16 random bytes.

    The top bit of the first byte is cleared so the id never starts with '-' or '_', which
    Kafka's own generator avoids too (a leading '-' reads as an option on a command line).
    """
    if len(random16) != 16:
        raise ValueError("a cluster id needs exactly 16 bytes")
    raw = bytes([random16[0] & 0x7F]) + random16[1:]
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def broker_argv(java: str, classpath: Sequence[str], paths: StackPaths) -> list[str]:
    return [
        java,
        *JVM_OPTIONS,
        f"-Dlog4j2.configurationFile={paths.kafka_log4j}",
        "-cp",
        os.pathsep.join(classpath),
        "kafka.Kafka",
        str(paths.kafka_properties),
    ]
