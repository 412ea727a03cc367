"""The servers' addresses for the command modules, and the one-line errors of a server
that is not set, not reachable, or refuses us."""

from __future__ import annotations

import click
import psycopg
from aiokafka.errors import KafkaConnectionError

from pipeline import settings as configured
from pipeline.errors import first_line
from pipeline.settings import AddressMissing, Settings


def stack_urls(settings: Settings) -> tuple[str, str]:
    """(DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS) of the environment or the local stack."""
    return database_url(settings), kafka_bootstrap(settings)


def database_url(settings: Settings) -> str:
    """DATABASE_URL of the environment or the local stack (no Kafka needed)."""
    try:
        return configured.database_url(settings)
    except AddressMissing as exc:
        raise click.ClickException(str(exc)) from None


def kafka_bootstrap(settings: Settings) -> str:
    try:
        return configured.kafka_bootstrap(settings)
    except AddressMissing as exc:
        raise click.ClickException(str(exc)) from None


def unreachable(settings: Settings, exc: BaseException) -> str | None:
    """The one-line error of a server we could not reach (or that refused us), naming the
    setting and the address (never a password); None for any other error."""
    if isinstance(exc, KafkaConnectionError):
        address = settings.kafka_bootstrap_servers
        return f"cannot reach Kafka at KAFKA_BOOTSTRAP_SERVERS={address}: {first_line(exc)}"
    if isinstance(exc, psycopg.OperationalError):
        return database_unusable("DATABASE_URL", settings.database_url or "", exc)
    return None


def database_unusable(setting: str, url: str, exc: BaseException) -> str:
    """The one line for a PostgreSQL server at `url` (named by `setting`) that failed us."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        parts = {}
    where = f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}"
    if parts.get("dbname"):
        where += f"/{parts['dbname']}"
    return f"cannot use PostgreSQL at {setting} ({where}): {first_line(exc)}"
