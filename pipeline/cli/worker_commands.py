"""`usage-pipeline worker`: run the Faust worker against the configured stack."""

from __future__ import annotations

import asyncio
import logging

import click
import psycopg

from pipeline.cli.addresses import database_unusable, kafka_access
from pipeline.cli.addresses import database_url as owner_database_url
from pipeline.settings import Settings


@click.command()
@click.option("--loglevel", default="info", show_default=True, help="Worker log level.")
@click.pass_obj
def worker(settings: Settings, loglevel: str) -> None:
    """Consume usage events, book them in PostgreSQL, publish DLQ records and alerts."""
    from pipeline.stream import event_loop
    from pipeline.stream.app import create_app, resolve_partitions, resolve_replication, run

    event_loop.use(settings)

    kafka = kafka_access(settings)
    setting = "WORKER_DATABASE_URL" if settings.worker_database_url else "DATABASE_URL"
    database_url = settings.worker_database_url or owner_database_url(settings)
    # Both servers answer before Faust starts: an unreachable one is a one-line error here,
    # not a Faust traceback (Kafka's is the command group's). Later the worker rides out
    # either going away.
    try:
        psycopg.connect(database_url, connect_timeout=10).close()
    except psycopg.OperationalError as exc:
        raise click.ClickException(database_unusable(setting, database_url, exc)) from None
    settings = asyncio.run(resolve_replication(settings, kafka))
    settings = asyncio.run(resolve_partitions(settings, kafka))
    logging.getLogger("aiokafka").setLevel(logging.NOTSET)  # the worker's logs are Faust's
    (settings.state_dir / "faust").mkdir(parents=True, exist_ok=True)
    app = create_app(settings, database_url, kafka)
    run(app, loglevel)
