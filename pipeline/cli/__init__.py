"""The `usage-pipeline` command: one click group, one module per command group."""

from __future__ import annotations

import sys

import click
from pydantic import ValidationError

from pipeline.settings import Settings


def load_settings() -> Settings:
    """Build the settings once, turning a bad environment into a one-line error."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"])
        raise click.UsageError(f"bad setting {name}: {first['msg']}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def main(ctx: click.Context) -> None:
    """Usage-and-credit pipeline for LLM gateways."""
    ctx.obj = load_settings()


def _register() -> None:
    from pipeline.cli import bench, books, chaos, db, demo, dev, events, money, plans, worker

    main.add_command(dev.dev)
    main.add_command(db.db)
    main.add_command(worker.worker)
    main.add_command(events.publish)
    main.add_command(events.dlq_group)
    main.add_command(events.schema_command)
    main.add_command(demo.demo_command)
    main.add_command(books.reconcile_command)
    main.add_command(books.credits)
    for command in plans.COMMANDS:
        books.credits.add_command(command)
    main.add_command(money.prices_group)
    main.add_command(money.margins_group)
    main.add_command(money.report_group)
    main.add_command(bench.bench)
    main.add_command(chaos.chaos_command)


_register()


def run() -> None:  # pragma: no cover - thin wrapper for `python -m`
    sys.exit(main())
