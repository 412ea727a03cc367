"""`usage-pipeline bench queries`: the seed's query benchmarks at several ledger sizes.

For each size a fresh database ``bench_ledger_<size>`` is created on the server, migrated,
seeded and filled (`pipeline.ops.bench.ledger_fill`); then the four seed queries run
(`pipeline.ops.bench.queries`) and `reconcile` is timed over the whole database. The database
is dropped afterwards unless ``--keep``. Results are printed as they come and written as
JSON after every size, so a long run that is stopped keeps what it measured.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pipeline.cli.addresses import database_url
from pipeline.errors import PipelineError, first_line
from pipeline.ops.bench.ledger_fill import fill_ledgers
from pipeline.ops.bench.queries import run_queries, time_reconcile
from pipeline.schema import migrations
from pipeline.schema.seed import seed
from pipeline.settings import Settings


def parse_sizes(text: str) -> list[int]:
    """Parse "0,1000000" into [0, 1000000]; a one-line error for anything else."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of row counts") from None
    if not sizes or any(size < 0 for size in sizes):
        raise click.BadParameter(f"{text!r}: give one or more row counts >= 0")
    return list(dict.fromkeys(sizes))


@click.command(name="queries")
@click.option(
    "--sizes",
    default="0,1000000,10000000",
    show_default=True,
    help="Ledger sizes (usage rows), comma-separated.",
)
@click.option(
    "--users",
    type=click.IntRange(min=1),
    default=2_000,
    show_default=True,
    help="Bench users the rows are spread over (heavy-tailed).",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Executions of each query (a random user or coupon each).",
)
@click.option("--seed", "seed_value", type=int, default=1, show_default=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the results as JSON to this file.",
)
@click.option(
    "--database-url",
    "database_url_option",
    default=None,
    help="Server to create the bench databases on (a superuser's conninfo); "
    "default: DATABASE_URL or the running dev stack.",
)
@click.option("--keep", is_flag=True, help="Keep the bench databases afterwards.")
@click.pass_obj
def queries(
    settings: Settings | None,
    sizes: str,
    users: int,
    repeats: int,
    seed_value: int,
    out: Path | None,
    database_url_option: str | None,
    keep: bool,
) -> None:
    """The seed's four query benchmarks and reconcile's time at each ledger size."""
    sizes_list = parse_sizes(sizes)
    if settings is None:  # invoked on its own rather than under the `usage-pipeline` group
        from pipeline.cli import load_settings

        settings = load_settings()
    admin_url = database_url_option or database_url(settings)
    report: dict[str, Any] = {"users": users, "repeats": repeats, "seed": seed_value, "sizes": []}
    click.echo(f"{'size':>10}  {'query':<28} {'median ms':>10} {'p95 ms':>9}  indexes")
    for size in sizes_list:
        try:
            entry = _measure(admin_url, size, users, repeats, seed_value, keep,
                             settings.usd_per_credit)  # fmt: skip
        except (PipelineError, psycopg.Error) as exc:
            raise click.ClickException(f"size {size}: {first_line(exc)}") from None
        report["sizes"].append(entry)
        for q in entry["queries"]:
            click.echo(
                f"{size:>10}  {q['name']:<28} {q['median_ms']:>10.3f} {q['p95_ms']:>9.3f}  "
                f"{', '.join(q['indexes']) or '(none: sequential scan)'}"
            )
        fill = entry["fill"]
        click.echo(
            f"{size:>10}  fill {fill['fill_seconds']:.1f} s (+ vacuum {fill['vacuum_seconds']:.1f}"
            f" s), reconcile {entry['reconcile_seconds']:.2f} s"
        )
        if out is not None:
            out.write_text(json.dumps(report, indent=2) + "\n")


def _measure(
    admin_url: str, size: int, users: int, repeats: int, seed_value: int, keep: bool,
    usd_per_credit: Any,
) -> dict[str, Any]:  # fmt: skip
    name = f"bench_ledger_{size}"
    url = _fresh_database(admin_url, name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            migrations.migrate(conn)
            seed(conn)
            fill = fill_ledgers(conn, size, users, seed_value, datetime.now(UTC),
                                usd_per_credit=usd_per_credit)  # fmt: skip
            results = run_queries(conn, repeats, seed_value)
            reconcile_seconds = time_reconcile(conn)
    finally:
        if not keep:
            _drop_database(admin_url, name)
    return {
        "size": size,
        "database": name,
        "fill": asdict(fill),
        "queries": [asdict(r) for r in results],
        "reconcile_seconds": reconcile_seconds,
    }


def _fresh_database(admin_url: str, name: str) -> str:
    _drop_database(admin_url, name)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_conninfo(admin_url, dbname=name)


def _drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
