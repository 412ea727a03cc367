"""A Kafka cluster on loopback, as production runs one: a KRaft controller and three brokers
that replicate every topic three ways (min.insync.replicas 2), so one broker may die.

Each node is a `kafka` node of its own, in ``<root>/node-<id>`` (its own properties, data,
log and pid file); they share one cluster id. For drills and tests: `dev up` stays one node.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from pipeline.ops.devstack import kafka, process, toolchain
from pipeline.ops.devstack.kafka_config import (
    CONTROLLER_NODE,
    broker_properties,
    controller_properties,
)
from pipeline.ops.devstack.ports import LOOPBACK, free_ports
from pipeline.ops.devstack.stack_errors import StackError
from pipeline.ops.devstack.state import StackPaths


@dataclass(frozen=True)
class Cluster:
    root: Path
    controller_port: int
    broker_ports: dict[int, int]
    """node id -> its client port."""
    partitions: int
    cluster_random: bytes
    java: str
    classpath: tuple[str, ...]

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{LOOPBACK}:{port}" for port in self.broker_ports.values())

    def node(self, node_id: int) -> StackPaths:
        return StackPaths.of(self.root / f"node-{node_id}")


def start(
    root: Path,
    brokers: int = 3,
    partitions: int = 4,
    pom: Path = toolchain.DEFAULT_POM,
    progress: toolchain.Progress = lambda message: None,
) -> Cluster:
    """Start a controller and `brokers` brokers; return once every broker answers."""
    controller_port, *ports = free_ports(1 + brokers, (), frozenset())
    ids = range(CONTROLLER_NODE + 1, CONTROLLER_NODE + 1 + brokers)
    java = toolchain.require_java()
    entries = toolchain.classpath(StackPaths.of(root), pom, progress)
    cluster = Cluster(root, controller_port, dict(zip(ids, ports, strict=True)), partitions,
                      os.urandom(16), java, tuple(entries))  # fmt: skip
    try:
        node = cluster.node(CONTROLLER_NODE)
        properties = controller_properties(node.kafka_data, controller_port)
        kafka.start_node(node, properties, cluster.java, cluster.classpath, cluster.cluster_random)
        for node_id in cluster.broker_ports:
            start_broker(cluster, node_id, wait=False)
        for node_id, port in cluster.broker_ports.items():
            paths = cluster.node(node_id)
            pid = kafka.running_pid(paths)
            if pid is None:
                raise StackError(
                    f"Kafka broker {node_id} exited while starting; see {paths.kafka_log}"
                )
            kafka.wait_ready(paths, pid, port)
    except BaseException:
        stop(cluster)
        raise
    return cluster


def start_broker(cluster: Cluster, node_id: int, wait: bool = True) -> None:
    """Start (or start again, with its data) broker `node_id` of `cluster`."""
    paths = cluster.node(node_id)
    port = cluster.broker_ports[node_id]
    properties = broker_properties(
        node_id, paths.kafka_data, port, cluster.controller_port, cluster.partitions,
        len(cluster.broker_ports),
    )  # fmt: skip
    pid = kafka.start_node(
        paths, properties, cluster.java, cluster.classpath, cluster.cluster_random
    )
    if wait:
        kafka.wait_ready(paths, pid, port)


def kill_broker(cluster: Cluster, node_id: int) -> None:
    """kill -9 broker `node_id`, and wait until it is gone."""
    paths = cluster.node(node_id)
    pid = kafka.running_pid(paths)
    if pid is None:
        raise StackError(f"Kafka broker {node_id} is not running")
    os.kill(pid, signal.SIGKILL)
    if not process.terminate(pid, grace=0.0):
        raise StackError(f"Kafka broker {node_id} (pid {pid}) outlived SIGKILL")


def stop(cluster: Cluster) -> None:
    """Stop every node that runs, brokers before the controller."""
    for node_id in [*cluster.broker_ports, CONTROLLER_NODE]:
        kafka.stop(cluster.node(node_id))
