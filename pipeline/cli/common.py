"""Helpers shared by the command modules."""

from __future__ import annotations

import click

from pipeline.errors import PipelineError
from pipeline.settings import Settings


def stack_urls(settings: Settings) -> tuple[str, str]:
    """(DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS) from the settings or the running dev stack."""
    from pipeline import devstack

    try:
        return database_url(settings), devstack.kafka_bootstrap(settings)
    except PipelineError as exc:
        raise click.ClickException(str(exc)) from None


def database_url(settings: Settings) -> str:
    """DATABASE_URL from the settings or the running dev stack (no Kafka needed)."""
    from pipeline import devstack

    try:
        return devstack.database_url(settings)
    except PipelineError as exc:
        raise click.ClickException(str(exc)) from None
