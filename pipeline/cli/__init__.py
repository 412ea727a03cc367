"""The `usage-pipeline` command: one click group, one module per command group."""

from __future__ import annotations

import logging
import sys

import click
from pydantic import ValidationError

from pipeline import compiled
from pipeline.settings import Settings, from_environment


def load_settings() -> Settings:
    """Build the settings once, turning a bad environment into a one-line error."""
    try:
        return from_environment()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"])
        if not name:  # a rule between settings: its message names them
            raise click.UsageError(first["msg"].removeprefix("Value error, ")) from None
        raise click.UsageError(f"bad setting {name}: {first['msg']}") from None


class _Commands(click.Group):
    """The command group: a server that cannot be reached is a one-line error, whichever
    command found it."""

    def invoke(self, ctx: click.Context) -> object:
        from pipeline.cli.addresses import unreachable

        try:
            return super().invoke(ctx)
        except Exception as exc:
            why = unreachable(ctx.obj, exc) if isinstance(ctx.obj, Settings) else None
            if why is None:
                raise
            raise click.ClickException(why) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def main(ctx: click.Context) -> None:
    """Usage-and-credit pipeline for LLM gateways."""
    # aiokafka logs each failed connection before it raises; a command reports the error
    # itself, in one line (the worker turns aiokafka's logs back on).
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    if stale := compiled.stale():
        raise click.ClickException(compiled.stale_message(stale))
    ctx.obj = load_settings()


def _register() -> None:
    from pipeline.cli import (
        api_commands,
        bench_commands,
        chaos_commands,
        db_commands,
        demo_commands,
        dev_commands,
        event_commands,
        gateway_commands,
        ledger_commands,
        money_commands,
        plan_commands,
        worker_commands,
    )

    main.add_command(dev_commands.dev)
    main.add_command(db_commands.db)
    main.add_command(worker_commands.worker)
    main.add_command(event_commands.publish)
    main.add_command(event_commands.dlq_group)
    main.add_command(event_commands.schema_command)
    main.add_command(demo_commands.demo_command)
    main.add_command(ledger_commands.reconcile_command)
    main.add_command(ledger_commands.credits)
    for command in plan_commands.COMMANDS:
        ledger_commands.credits.add_command(command)
    main.add_command(money_commands.prices_group)
    main.add_command(money_commands.margins_group)
    main.add_command(money_commands.report_group)
    main.add_command(bench_commands.bench)
    main.add_command(chaos_commands.chaos_command)
    main.add_command(api_commands.api_command)
    main.add_command(api_commands.api_keys)
    main.add_command(gateway_commands.gateway_users)


_register()


def run() -> None:  # pragma: no cover - thin wrapper for `python -m`
    sys.exit(main())
