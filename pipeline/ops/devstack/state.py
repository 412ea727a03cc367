"""The state directory of the local stack: where each file lives, and the ports record.

Everything the stack writes (data, logs, pid files, rendered configs) lives under one
directory, the ``state_dir`` setting. ``stack.json`` keeps the ports chosen at the first
`dev up`, so a restarted stack gets the same addresses while they are free.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Ports:
    """Loopback ports of the local stack; None for one never chosen."""

    kafka: int | None = None
    kafka_controller: int | None = None
    postgres: int | None = None


@dataclass(frozen=True)
class StackPaths:
    """Every path of the local stack, derived from the state directory."""

    root: Path

    @classmethod
    def of(cls, state_dir: Path) -> StackPaths:
        return cls(state_dir.expanduser().absolute())

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def ports(self) -> Path:
        return self.root / "stack.json"

    @property
    def login_passwords(self) -> Path:
        """The passwords of the stack's own logins (mode 0600; `down` keeps it, as it keeps
        the data directory whose password verifiers it matches)."""
        return self.root / "logins.json"

    @property
    def kafka(self) -> Path:
        return self.root / "kafka"

    @property
    def kafka_data(self) -> Path:
        return self.kafka / "data"

    @property
    def kafka_properties(self) -> Path:
        return self.kafka / "server.properties"

    @property
    def kafka_log4j(self) -> Path:
        return self.kafka / "log4j2.properties"

    @property
    def kafka_log(self) -> Path:
        return self.kafka / "server.log"

    @property
    def kafka_stdout(self) -> Path:
        return self.kafka / "stdout.log"

    @property
    def kafka_pid(self) -> Path:
        return self.kafka / "kafka.pid"

    @property
    def kafka_classpath(self) -> Path:
        return self.kafka / "classpath.txt"

    @property
    def postgres(self) -> Path:
        return self.root / "postgres"

    @property
    def postgres_data(self) -> Path:
        return self.postgres / "data"

    @property
    def postgres_log(self) -> Path:
        return self.postgres / "postgres.log"

    @property
    def postgres_bin_record(self) -> Path:
        """Which PostgreSQL binaries made (and so run) the cluster."""
        return self.postgres / "bin_dir"


def parse_ports(text: str) -> Ports:
    """The ports of a ``stack.json`` text; unknown or malformed entries are left unset."""
    try:
        raw = json.loads(text)
    except ValueError:
        return Ports()
    if not isinstance(raw, dict):
        return Ports()

    def port(name: str) -> int | None:
        value = raw.get(name)
        valid = isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536
        return value if valid else None

    return Ports(
        kafka=port("kafka"), kafka_controller=port("kafka_controller"), postgres=port("postgres")
    )


def render_ports(ports: Ports) -> str:
    return json.dumps(asdict(ports), indent=2, sort_keys=True) + "\n"


def read_ports(paths: StackPaths) -> Ports:
    try:
        return parse_ports(paths.ports.read_text())
    except FileNotFoundError:
        return Ports()


def write_ports(paths: StackPaths, ports: Ports) -> None:
    write_atomically(paths.ports, render_ports(ports))


def write_atomically(path: Path, text: str, private: bool = False) -> None:
    """Replace ``path`` with ``text`` so a reader never sees half a file; ``private``: a
    file only its owner may read, from its creation on (for passwords)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    mode = 0o600 if private else 0o666  # less the umask, as for any new file
    with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w") as out:
        out.write(text)
    partial.replace(path)


@contextmanager
def locked(paths: StackPaths) -> Iterator[None]:
    """Hold the state directory's lock: one `dev up` / `dev down` at a time."""
    paths.root.mkdir(parents=True, exist_ok=True)
    with paths.lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
