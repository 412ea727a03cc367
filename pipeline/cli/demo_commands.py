"""`usage-pipeline demo`: the whole product on this machine, from nothing to the books."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime

import click
import psycopg

from pipeline.cli.addresses import stack_urls
from pipeline.money import report as reports
from pipeline.money.reconcile import reconcile
from pipeline.ops.demo import sample
from pipeline.ops.demo import users as demo
from pipeline.ops.devstack.waiting import wait_until
from pipeline.ops.worker_process import start_worker, stop_worker
from pipeline.schema import logins, migrations, seed
from pipeline.settings import Settings
from pipeline.stream import kafka_io
from pipeline.stream.kafka_access import KafkaAccess


@click.command(name="demo")
@click.option("--events", default=20_000, show_default=True, help="Events to generate.")
@click.option("--seed", "rng_seed", type=int, default=None, help="Random seed (default: new).")
@click.option("--timeout", default=600, show_default=True, help="Seconds to wait for the drain.")
@click.pass_obj
def demo_command(settings: Settings, events: int, rng_seed: int | None, timeout: int) -> None:
    """Start the stack, migrate, seed, publish a sample, drain it and print the books."""
    from pipeline.ops import devstack

    if events < 1:
        raise click.BadParameter("must be at least 1", param_hint="--events")
    env = devstack.up(settings)
    # On a fresh state directory the settings were read before `up` recorded the addresses.
    settings = settings.model_copy(
        update={
            "database_url": env.database_url,
            "kafka_bootstrap_servers": env.kafka_bootstrap_servers,
        }
    )
    database_url, kafka = stack_urls(settings)
    click.echo(f"stack up: {env}")
    with psycopg.connect(database_url) as conn:
        applied = migrations.migrate(conn)
        click.echo(f"migrations applied: {len(applied)}")
        click.echo(f"seed: {seed.seed(conn)}")
        now = datetime.now(UTC)
        demo.setup_users(conn, sample.DEMO_USERS, now)
        # The worker's own login: the stack's on its embedded server, else made here.
        worker_url = (
            env.logins.worker_database_url
            if env.logins is not None
            else logins.worker_login_url(conn, database_url)
        )
    # A new seed per run: the same seed twice replays the same request ids with new times,
    # which the books rightly reject as conflicting duplicates.
    generated = sample.generate(events, now, seed=rng_seed or random.randrange(2**32))
    click.echo(
        f"sample: {len(generated.lines)} events ({generated.unique_valid} unique valid, "
        f"{generated.duplicates} redelivered, {generated.bad} bad)"
    )
    records = ((kafka_io.user_key(x), x, list[tuple[str, bytes]]()) for x in generated.lines)
    asyncio.run(
        kafka_io.ensure_topic(
            kafka,
            settings.usage_topic,
            settings.topic_partitions,
            settings.topic_replication_factor,
        )
    )
    asyncio.run(kafka_io.publish(kafka, settings.usage_topic, records))

    log_path = settings.state_dir / "demo-worker.log"
    worker_env = dict(
        os.environ, WORKER_DATABASE_URL=worker_url, KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap
    )
    worker = start_worker(worker_env, log_path)
    try:
        started = time.monotonic()
        run_start = datetime.now(UTC)
        _wait_drained(kafka, settings, started + timeout, worker)
        elapsed = time.monotonic() - started
    finally:
        stop_worker(worker)
    _report(database_url, kafka, settings, len(generated.lines), elapsed, run_start)


def _wait_drained(
    kafka: KafkaAccess, settings: Settings, deadline: float, worker: subprocess.Popen[bytes]
) -> None:
    def drained() -> bool:
        if worker.poll() is not None:
            raise click.ClickException(f"worker exited with {worker.returncode}; see its log")
        topic = settings.usage_topic
        return asyncio.run(kafka_io.group_lag(kafka, settings.worker_id, topic)) == 0

    if not wait_until(drained, deadline - time.monotonic(), interval=0.5):
        raise click.ClickException("the topic was not drained in time; see the worker log")


def _report(
    database_url: str,
    kafka: KafkaAccess,
    settings: Settings,
    published: int,
    elapsed: float,
    run_start: datetime,
) -> None:
    with psycopg.connect(database_url) as conn:
        totals = demo.user_totals(conn, [u.id for u in sample.DEMO_USERS])
        violations = reconcile(conn)
        span = conn.execute(
            """
            SELECT count(*), extract(epoch FROM max(created_at) - min(created_at)),
                   min(request_started_at AT TIME ZONE 'UTC')::date,
                   max(request_started_at AT TIME ZONE 'UTC')::date
            FROM token_usage_ledger WHERE created_at >= %s
            """,
            (run_start,),
        ).fetchone()
        rows, seconds, first_day, last_day = span if span else (0, None, None, None)
        # The UTC days this run's requests started on (today, if it booked nothing new).
        first_day, last_day = first_day or run_start.date(), last_day or run_start.date()
        by_user = reports.daily_report(conn, first_day, last_day, by="user")
        by_model = reports.daily_report(conn, first_day, last_day, by="model")
    click.echo("")
    header = ("user", "requests", "tokens", "vendor USD", "credits", "balance")
    click.echo("{:<20}{:>10}{:>14}{:>16}{:>12}{:>12}".format(*header))
    for t in totals:
        click.echo(
            f"{t.email:<20}{t.requests:>10}{t.tokens:>14}{t.vendor_cost:>16.8f}"
            f"{t.credits:>12}{t.balance:>12}"
        )
    letters = Counter(
        x.reason for x in asyncio.run(kafka_io.dead_letters(kafka, settings.dlq_topic))
    )
    click.echo("\ndead letters by reason (all runs):")
    for reason, n in letters.most_common():
        click.echo(f"  {reason:<22}{n}")
    click.echo(
        f"\ndrained {published} events in {elapsed:.1f}s including the worker's start "
        f"({published / elapsed:.0f} events/s)"
    )
    if seconds:
        click.echo(
            f"booked {rows} ledger rows in {float(seconds):.1f}s from first to last commit "
            f"({rows / float(seconds):.0f} rows/s)"
        )
    click.echo(
        "reconcile: every invariant holds"
        if not violations
        else "reconcile FAILED:\n" + "\n".join(f"  {v}" for v in violations)
    )
    days = f"{first_day}" if first_day == last_day else f"{first_day} to {last_day}"
    click.echo(f"\ndaily report {days} by user (from the summary tables):")
    click.echo(reports.render(by_user, "table"))
    click.echo(f"\ndaily report {days} by model:")
    click.echo(reports.render(by_model, "table"))
    if violations:
        raise click.ClickException(f"reconcile found {len(violations)} violations")
