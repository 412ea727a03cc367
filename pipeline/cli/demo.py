"""`usage-pipeline demo`: the whole product on this machine, from nothing to the books."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime

import click
import psycopg

from pipeline import demo, dlq, kafka_io, migrations, sample, seed
from pipeline.settings import Settings


@click.command(name="demo")
@click.option("--events", default=20_000, show_default=True, help="Events to generate.")
@click.option("--seed", "rng_seed", default=7, show_default=True, help="Random seed.")
@click.option("--timeout", default=600, show_default=True, help="Seconds to wait for the drain.")
@click.pass_obj
def demo_command(settings: Settings, events: int, rng_seed: int, timeout: int) -> None:
    """Start the stack, migrate, seed, publish a sample, drain it and print the books."""
    from pipeline import devstack

    if events < 1:
        raise click.BadParameter("must be at least 1", param_hint="--events")
    env = devstack.up(settings)
    database_url, bootstrap = devstack.database_url(settings), devstack.kafka_bootstrap(settings)
    click.echo(f"stack up: {env}")
    with psycopg.connect(database_url) as conn:
        applied = migrations.migrate(conn)
        click.echo(f"migrations applied: {len(applied)}")
        click.echo(f"seed: {seed.seed(conn)}")
        now = datetime.now(UTC)
        demo.setup_users(conn, sample.DEMO_USERS, now)
    generated = sample.generate(events, now, seed=rng_seed)
    click.echo(
        f"sample: {len(generated.lines)} events ({generated.unique_valid} unique valid, "
        f"{generated.duplicates} redelivered, {generated.bad} bad)"
    )
    records = ((kafka_io.user_key(x), x, list[tuple[str, bytes]]()) for x in generated.lines)
    asyncio.run(kafka_io.publish(bootstrap, settings.usage_topic, records))

    log_path = settings.state_dir / "demo-worker.log"
    worker_env = dict(os.environ, DATABASE_URL=database_url, KAFKA_BOOTSTRAP_SERVERS=bootstrap)
    with open(log_path, "ab") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "worker"], env=worker_env, stdout=log, stderr=log
        )
    try:
        started = time.monotonic()
        _wait_drained(bootstrap, settings, started + timeout, worker)
        elapsed = time.monotonic() - started
    finally:
        worker.terminate()
        worker.wait(30)
    _report(database_url, bootstrap, settings, len(generated.lines), elapsed)


def _wait_drained(
    bootstrap: str, settings: Settings, deadline: float, worker: subprocess.Popen[bytes]
) -> None:
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise click.ClickException(f"worker exited with {worker.returncode}; see its log")
        lag = asyncio.run(kafka_io.group_lag(bootstrap, settings.worker_id, settings.usage_topic))
        if lag == 0:
            return
        time.sleep(0.5)
    raise click.ClickException("the topic was not drained in time; see the worker log")


def _report(
    database_url: str, bootstrap: str, settings: Settings, published: int, elapsed: float
) -> None:
    with psycopg.connect(database_url) as conn:
        totals = demo.user_totals(conn, [u.id for u in sample.DEMO_USERS])
        span = conn.execute(
            "SELECT extract(epoch FROM max(created_at) - min(created_at)) FROM token_usage_ledger"
        ).fetchone()
    click.echo("")
    header = ("user", "requests", "tokens", "vendor USD", "credits", "balance")
    click.echo("{:<20}{:>10}{:>14}{:>16}{:>12}{:>12}".format(*header))
    for t in totals:
        click.echo(
            f"{t.email:<20}{t.requests:>10}{t.tokens:>14}{t.vendor_cost:>16.8f}"
            f"{t.credits:>12}{t.balance:>12}"
        )
    letters = asyncio.run(_dead_letters(bootstrap, settings.dlq_topic))
    click.echo("\ndead letters by reason:")
    for reason, n in letters.most_common():
        click.echo(f"  {reason:<22}{n}")
    click.echo(
        f"\ndrained {published} events in {elapsed:.1f}s including worker start "
        f"({published / elapsed:.0f} events/s); ledger span {float(span[0] or 0):.1f}s"
        if span
        else ""
    )


async def _dead_letters(bootstrap: str, topic: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    async for record in kafka_io.read_all(bootstrap, topic):
        counts[dlq.from_record(record.headers, record.key, record.value).reason] += 1
    return counts
