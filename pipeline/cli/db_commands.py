"""`usage-pipeline db`: apply, undo and inspect migrations; load the reference data."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click
import psycopg

from pipeline.cli.addresses import database_unusable
from pipeline.errors import PipelineError, first_line
from pipeline.schema import logins, migrations
from pipeline.schema.seed import seed as seed_reference_data
from pipeline.settings import Settings, database_url


@click.group()
def db() -> None:
    """Database schema and reference data.

    Uses DATABASE_URL if set, else the PostgreSQL server of the running local stack
    (`usage-pipeline dev up`).
    """


@db.command()
@click.pass_obj
def migrate(settings: Settings) -> None:
    """Apply every pending migration, each in its own transaction."""
    with _connection(settings) as conn:
        applied = migrations.migrate(conn)
    for name in applied:
        click.echo(f"applied {name}")
    if not applied:
        click.echo("schema is up to date")


@db.command()
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="How many of the most recently applied migrations to undo.",
)
@click.pass_obj
def rollback(settings: Settings, steps: int) -> None:
    """Undo the most recently applied migrations, newest first."""
    with _connection(settings) as conn:
        undone = migrations.rollback(conn, steps=steps)
    for name in undone:
        click.echo(f"rolled back {name}")
    if not undone:
        click.echo("no migration is applied")


@db.command()
@click.pass_obj
def status(settings: Settings) -> None:
    """List every migration: applied, pending, changed or missing."""
    with _connection(settings) as conn:
        lines = migrations.status(conn)
    for line in lines:
        applied_at = f"{line.applied_at:%Y-%m-%d %H:%M:%S %Z}" if line.applied_at else ""
        click.echo(f"{line.name:<40} {line.state:<8} {applied_at}".rstrip())


@db.command()
@click.pass_obj
def seed(settings: Settings) -> None:
    """Insert the missing providers, model prices and tier margins."""
    with _connection(settings) as conn:
        report = seed_reference_data(conn)
    if report.total == 0:
        click.echo("already seeded, nothing changed")
    else:
        click.echo(
            f"seeded {report.users} users, {report.providers} providers, "
            f"{report.model_prices} model prices, {report.pricing_configs} pricing configs"
        )


@contextmanager
def _connection(settings: Settings) -> Iterator[psycopg.Connection]:
    """A connection to the configured database; any failure becomes a one-line error."""
    try:
        with psycopg.connect(database_url(settings), autocommit=True) as conn:
            yield conn
    except PipelineError as exc:
        raise click.ClickException(str(exc)) from None
    except psycopg.OperationalError as exc:
        url = settings.database_url or ""
        raise click.ClickException(database_unusable("DATABASE_URL", url, exc)) from None
    except psycopg.Error as exc:
        raise click.ClickException(f"database error: {first_line(exc)}") from None


@db.command(name="grant-login")
@click.argument("name")
@click.option(
    "--role", required=True, type=click.Choice(logins.GROUP_ROLES),
    help="pipeline_writer for a worker, finance_reader for finance's reports.",
)  # fmt: skip
@click.option(
    "--password-stdin", is_flag=True,
    help="Read the password from stdin instead of generating one.",
)  # fmt: skip
@click.pass_obj
def grant_login(settings: Settings, name: str, role: str, password_stdin: bool) -> None:
    """Create or update the LOGIN role NAME as a member of ROLE (and of no other group
    role). A generated password is printed once, on stdout; it is never logged."""
    generated = None if password_stdin else logins.new_password()
    password = generated or click.get_text_stream("stdin").readline().strip()
    if not password:
        raise click.UsageError("--password-stdin: stdin holds no password")
    with _connection(settings) as conn:
        created = logins.grant_login(conn, name, role, password)
    click.echo(f"{'created' if created else 'updated'} login {name} in {role}", err=True)
    if generated is not None:
        click.echo(generated)
