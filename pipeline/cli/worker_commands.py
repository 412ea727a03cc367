"""`usage-pipeline worker`: run the Faust worker against the configured stack."""

from __future__ import annotations

import click

from pipeline.cli.addresses import stack_urls
from pipeline.settings import Settings


@click.command()
@click.option("--loglevel", default="info", show_default=True, help="Worker log level.")
@click.pass_obj
def worker(settings: Settings, loglevel: str) -> None:
    """Consume usage events, book them in PostgreSQL, publish DLQ records and alerts."""
    from faust.worker import Worker

    from pipeline.stream.app import create_app

    database_url, bootstrap = stack_urls(settings)
    (settings.state_dir / "faust").mkdir(parents=True, exist_ok=True)
    app = create_app(settings, database_url, bootstrap)
    Worker(app, loglevel=loglevel).execute_from_commandline()
