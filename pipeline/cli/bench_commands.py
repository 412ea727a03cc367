"""`usage-pipeline bench`: stream (the four runners side by side, and the rate sweep),
api (the gateway API under load), queries, plot, and all (what `make bench` runs)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from pipeline import REPOSITORY
from pipeline.cli.bench_query_commands import queries
from pipeline.settings import Settings

REPO = REPOSITORY
DEFAULT_CATALOG = REPO / "data" / "litellm-model-prices-1.110.2.json"
DEFAULT_OUT = REPO / "docs" / "benchmarks" / "stream.json"
DEFAULT_API_OUT = REPO / "docs" / "benchmarks" / "api.json"
DEFAULT_API_PLOT = REPO / "docs" / "benchmarks" / "api-latency.png"
DEFAULT_DOC = REPO / "docs" / "benchmarks.md"
DEFAULT_RATES = "1000,2500,5000,10000,max"
DEFAULT_BATCH_RATES = "5000,10000,max"


def parse_rates(text: str) -> list[float | None]:
    """'1000,2500,max' -> [1000.0, 2500.0, None]; a bad list is a click error."""
    rates: list[float | None] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part == "max":
            rates.append(None)
            continue
        try:
            value = float(part)
        except ValueError:
            raise click.BadParameter(
                f"{part!r} is not a rate or 'max'", param_hint="--rates"
            ) from None
        if value <= 0:
            raise click.BadParameter(f"{part} is not a positive rate", param_hint="--rates")
        rates.append(value)
    return rates


@click.group(name="bench")
def bench() -> None:
    """Benchmarks in a dedicated local stack (never the dev stack)."""


@bench.command(name="stream")
@click.option(
    "--events", default=60_000, show_default=True, help="Records of the side-by-side stream."
)
@click.option("--users", default=1_000, show_default=True, help="Bench users (Zipf-active).")
@click.option(
    "--rates",
    default=DEFAULT_RATES,
    show_default=True,
    help="Offered rates of the sweep ('' for none).",
)
@click.option(
    "--batch-rates",
    default=DEFAULT_BATCH_RATES,
    show_default=True,
    help="Offered rates (events/s) of the sweep on batch records ('' for none).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 500),
    default=500,
    show_default=True,
    help="Events per batch record of runner (b2).",
)
@click.option(
    "--sweep-seconds",
    default=6.0,
    show_default=True,
    help="Seconds of publishing per fixed-rate point.",
)
@click.option("--repeat", default=1, show_default=True, help="Runs; the summary takes medians.")
@click.option("--seed", "rng_seed", default=7, show_default=True, help="Generator seed.")
@click.option(
    "--catalog",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_CATALOG,
    help="LiteLLM price map.",
)
@click.option(
    "--baseline-seconds",
    default=45.0,
    show_default=True,
    help="The baseline's time budget (0: drain it all).",
)
@click.option(
    "--deadline", default=900.0, show_default=True, help="Seconds any one runner may take."
)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_OUT, show_default=True
)
@click.pass_obj
def stream_command(
    settings: Settings,
    events: int,
    users: int,
    rates: str,
    batch_rates: str,
    batch_size: int,
    sweep_seconds: float,
    repeat: int,
    rng_seed: int,
    catalog: Path,
    baseline_seconds: float,
    deadline: float,
    out: Path,
) -> None:
    """Baseline, pipeline, COPY limit and bare consumer on one stream; then the rate sweep."""
    from pipeline.ops.bench import results
    from pipeline.ops.bench.run import BenchParams, run_bench

    if events < 100:
        raise click.BadParameter("must be at least 100", param_hint="--events")
    if users < 1:
        raise click.BadParameter("must be at least 1", param_hint="--users")
    if repeat < 1:
        raise click.BadParameter("must be at least 1", param_hint="--repeat")
    if baseline_seconds < 0:
        raise click.BadParameter("must be 0 or more", param_hint="--baseline-seconds")
    if sweep_seconds <= 0:
        raise click.BadParameter("must be positive", param_hint="--sweep-seconds")
    if not catalog.is_file():
        raise click.BadParameter(f"{catalog} does not exist", param_hint="--catalog")
    params = BenchParams(
        events=events,
        users=users,
        rates=parse_rates(rates),
        batch_rates=parse_rates(batch_rates),
        batch_size=batch_size,
        sweep_seconds=sweep_seconds,
        repeat=repeat,
        seed=rng_seed,
        catalog=catalog,
        deadline_seconds=deadline,
        baseline_seconds=baseline_seconds,
    )
    result = run_bench(settings, params, dict(os.environ), click.echo)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    click.echo("")
    for line in results.tables(result["summary"]):
        click.echo(line)
    click.echo(f"\nwrote {out}")


@bench.command(name="api")
@click.option("--users", default=10_000, show_default=True, help="Users with balances.")
@click.option(
    "--clients",
    default=1_000,
    show_default=True,
    help="Requests in flight at most and connections open (vegeta's workers).",
)
@click.option("--seconds", default=20.0, show_default=True, help="Seconds of the checks phase.")
@click.option(
    "--ingest-seconds", default=15.0, show_default=True, help="Seconds of each ingest rate."
)
@click.option(
    "--ingest-rates",
    default="1000,5000",
    show_default=True,
    help="Events/s offered to POST /v1/events in arrays of 100 ('' for none).",
)
@click.option(
    "--background-rate",
    default=1000.0,
    show_default=True,
    help="Events/s published for the worker to book during the checks.",
)
@click.option(
    "--check-rate",
    default=1000.0,
    show_default=True,
    help="Checks per second offered, balance and entitlement in turn: 1,000 gateway "
    "connections each checking once a second before an upstream request.",
)
@click.option("--repeat", default=1, show_default=True, help="Runs; the summary takes medians.")
@click.option("--seed", "rng_seed", default=7, show_default=True, help="Generator seed.")
@click.option(
    "--catalog",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_CATALOG,
    help="LiteLLM price map.",
)
@click.option("--deadline", default=300.0, show_default=True, help="Seconds any one wait may take.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_API_OUT,
    show_default=True,
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_API_PLOT,
    show_default=True,
)
@click.pass_obj
def api_command(
    settings: Settings,
    users: int,
    clients: int,
    seconds: float,
    ingest_seconds: float,
    ingest_rates: str,
    background_rate: float,
    check_rate: float,
    repeat: int,
    rng_seed: int,
    catalog: Path,
    deadline: float,
    out: Path,
    plot_path: Path,
) -> None:
    """The gateway API under load on its own stack: balance and entitlement checks by
    concurrent clients while the worker books a steady stream, then ingest of arrays at
    each rate; the worker must book every event once."""
    from pipeline.ops.bench import api_results, plot, vegeta
    from pipeline.ops.bench.api_phases import ApiBenchParams
    from pipeline.ops.bench.api_run import run_api_bench

    for name, value in (("--users", users), ("--clients", clients), ("--repeat", repeat)):
        if value < 1:
            raise click.BadParameter("must be at least 1", param_hint=name)
    spans = (("--seconds", seconds), ("--ingest-seconds", ingest_seconds),
             ("--background-rate", background_rate), ("--check-rate", check_rate))  # fmt: skip
    for name, span in spans:
        if span <= 0:
            raise click.BadParameter("must be positive", param_hint=name)
    rates = parse_rates(ingest_rates)
    if None in rates:
        raise click.BadParameter("'max' is no ingest rate", param_hint="--ingest-rates")
    if not catalog.is_file():
        raise click.BadParameter(f"{catalog} does not exist", param_hint="--catalog")
    try:
        load_tool = vegeta.binary(click.echo)
    except vegeta.VegetaMissing as exc:
        raise click.ClickException(str(exc)) from None
    params = ApiBenchParams(
        users=users,
        clients=clients,
        seconds=seconds,
        ingest_seconds=ingest_seconds,
        ingest_rates=[r for r in rates if r is not None],
        background_eps=background_rate,
        check_rate=check_rate,
        repeat=repeat,
        seed=rng_seed,
        catalog=catalog,
        vegeta=load_tool,
        deadline_seconds=deadline,
    )
    result = run_api_bench(settings, params, dict(os.environ), click.echo)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    click.echo("")
    for line in api_results.tables(result["summary"], len(result["runs"])):
        click.echo(line)
    click.echo(f"\nwrote {out}")
    try:
        click.echo(f"wrote {plot.write_api_plot(result['summary'], plot_path)}")
    except plot.PlotError as exc:
        raise click.ClickException(str(exc)) from None


@bench.command(name="plot")
@click.option(
    "--data",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_OUT,
    show_default=True,
)
@click.option(
    "--doc", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_DOC, show_default=True
)
def plot_command(data: Path, doc: Path) -> None:
    """PNG plots of the stream JSON, and the figures section of docs/benchmarks.md."""
    from pipeline.ops.bench import plot

    try:
        result: dict[str, Any] = json.loads(data.read_text())
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read {data}: {exc}") from None
    try:
        written = plot.write_all(result, data.parent, doc)
    except plot.PlotError as exc:
        raise click.ClickException(str(exc)) from None
    for path in written:
        click.echo(f"wrote {path}")


bench.add_command(queries)


@bench.command(name="all")
@click.option("--repeat", default=3, show_default=True, help="Runs of the stream bench.")
@click.pass_context
def all_command(ctx: click.Context, repeat: int) -> None:
    """What `make bench` runs: the stream bench with repeats, the query bench, the plots."""
    click.echo(f"== stream ({repeat} runs) == {datetime.now(UTC):%H:%M:%S}")
    ctx.invoke(stream_command, repeat=repeat)
    click.echo(f"== queries == {datetime.now(UTC):%H:%M:%S}")
    from pipeline.ops import devstack

    # The query bench creates its databases on the configured or the dev stack's server
    # (the settings were read before `up`, so the stack's address is passed on).
    settings: Settings = ctx.obj
    env = devstack.up(settings)
    # 10M rows add ~6 min of fill and ~3 min of reconcile here: `bench queries` runs them.
    ctx.invoke(queries, sizes="0,1000000", out=DEFAULT_OUT.parent / "queries.json",
               database_url_option=env.database_url)  # fmt: skip
    click.echo(f"== plot == {datetime.now(UTC):%H:%M:%S}")
    ctx.invoke(plot_command)
