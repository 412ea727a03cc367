"""`usage-pipeline worker`: run the Faust worker against the configured stack."""

from __future__ import annotations

import asyncio
import logging

import click
import psycopg

from pipeline.cli.addresses import stack_urls
from pipeline.settings import Settings
from pipeline.stream import kafka_io


@click.command()
@click.option("--loglevel", default="info", show_default=True, help="Worker log level.")
@click.pass_obj
def worker(settings: Settings, loglevel: str) -> None:
    """Consume usage events, book them in PostgreSQL, publish DLQ records and alerts."""
    from faust.worker import Worker

    from pipeline.stream.app import create_app

    database_url, bootstrap = stack_urls(settings)
    # Both servers answer before Faust starts: an unreachable one is a one-line error here
    # (the command group's), not a Faust traceback. Later the worker rides out outages.
    psycopg.connect(database_url, connect_timeout=10).close()
    asyncio.run(kafka_io.reachable(bootstrap))
    logging.getLogger("aiokafka").setLevel(logging.NOTSET)  # the worker's logs are Faust's
    (settings.state_dir / "faust").mkdir(parents=True, exist_ok=True)
    app = create_app(settings, database_url, bootstrap)
    Worker(app, loglevel=loglevel).execute_from_commandline()
