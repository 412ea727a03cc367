"""`usage-pipeline chaos`: the fault drill on a stack of its own, with a verdict."""

from __future__ import annotations

import logging
import random
import signal
from types import FrameType

import click

from pipeline.settings import Settings


@click.command(name="chaos")
@click.option("--events", default=20_000, show_default=True, help="Events to replay.")
@click.option("--kills", default=3, show_default=True, help="Times to kill -9 a worker.")
@click.option("--seed", "rng_seed", type=int, default=None, help="Random seed (default: new).")
@click.option("--timeout", default=600, show_default=True, help="Seconds the whole run may take.")
@click.option(
    "--batch",
    type=click.IntRange(1, 500),
    default=None,
    help="Publish batch records of up to N events (contract v1.1) instead of one per record.",
)
@click.pass_obj
def chaos_command(
    settings: Settings,
    events: int,
    kills: int,
    rng_seed: int | None,
    timeout: int,
    batch: int | None,
) -> None:
    """Replay EVENTS through two workers while killing workers, restarting PostgreSQL and
    Kafka and making PostgreSQL read-only for a while, then check the books. Runs on its own
    stack (temporary directory, free loopback ports) and exits 0 only if every check passes."""
    from pipeline.ops.chaos import drill as chaos

    if events < 100:
        raise click.BadParameter("must be at least 100", param_hint="--events")
    if kills < 0:
        raise click.BadParameter("must not be negative", param_hint="--kills")
    if timeout < 30:
        raise click.BadParameter("must be at least 30", param_hint="--timeout")
    seed = rng_seed if rng_seed is not None else random.randrange(2**32)
    shape = f"batch records of up to {batch}" if batch else "one event per record"
    click.echo(f"chaos: {events} events ({shape}), {kills} kills, seed {seed}, timeout {timeout}s")
    _stop_on_sigterm()
    # The drill reports what the broker outage did to publishing; the client's own retry
    # chatter would bury that.
    for name in ("aiokafka", "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    report = chaos.run(
        settings, chaos.ChaosConfig(events, kills, seed, float(timeout), batch=batch), click.echo
    )
    click.echo("\nfaults injected:")
    for line in report.faults:
        click.echo(f"  {line}")
    click.echo("\nchecks:")
    for check in report.checks:
        click.echo(f"  {'PASS' if check.passed else 'FAIL'}  {check.name}: {check.detail}")
    if report.error is not None:
        click.echo(f"  FAIL  {report.error}")
    click.echo(f"\n{'PASSED' if report.passed else 'FAILED'} in {report.elapsed:.1f}s")
    if not report.passed:
        raise SystemExit(1)


def _stop_on_sigterm() -> None:
    """SIGTERM ends the run like Ctrl-C, so the servers and workers are stopped."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
