"""The servers' addresses for the command modules, as one-line errors when unset."""

from __future__ import annotations

import click

from pipeline import settings as configured
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
