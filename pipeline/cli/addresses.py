"""The servers' addresses for the command modules, and the one-line errors of a server
that is not set, not reachable, or refuses us."""

from __future__ import annotations

import asyncio

import click
import psycopg
from aiokafka.errors import KafkaConnectionError

from pipeline import settings as configured
from pipeline.errors import first_line
from pipeline.settings import AddressMissing, Settings
from pipeline.stream import kafka_io
from pipeline.stream.kafka_access import KafkaAccess, TlsFileUnusable, refusal
from pipeline.stream.kafka_access import from_settings as kafka_access_of


def stack_urls(settings: Settings) -> tuple[str, KafkaAccess]:
    """DATABASE_URL and the access to KAFKA_BOOTSTRAP_SERVERS (with its security settings),
    of the environment or the local stack."""
    return database_url(settings), kafka_access(settings)


def database_url(settings: Settings) -> str:
    """DATABASE_URL of the environment or the local stack (no Kafka needed)."""
    try:
        return configured.database_url(settings)
    except AddressMissing as exc:
        raise click.ClickException(str(exc)) from None


def kafka_access(settings: Settings) -> KafkaAccess:
    try:
        return kafka_access_of(settings)
    except (AddressMissing, TlsFileUnusable) as exc:
        raise click.ClickException(str(exc)) from None


def unreachable(settings: Settings, exc: BaseException) -> str | None:
    """The one-line error of a server we could not reach (or that refused us), naming the
    setting and the address (never a password); None for any other error."""
    if isinstance(exc, KafkaConnectionError):
        access = kafka_access(settings)
        return refusal(access, asyncio.run(kafka_io.connection_fault(access)))
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
