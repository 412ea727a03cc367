"""`usage-pipeline prices|margins|report` and `credits expire|reverse`: the admin's money tools."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from uuid import UUID

import click
import psycopg

from pipeline.cli.ledger_commands import credits
from pipeline.core.tariff import Rate
from pipeline.errors import PipelineError
from pipeline.money import liability, margin_report, movements, prices, verification
from pipeline.money import margins as margin_configs
from pipeline.money import report as reports
from pipeline.money.catalog import PriceError
from pipeline.money.margin_forecast import FORECAST_DAYS
from pipeline.settings import Settings, database_url


class DecimalType(click.ParamType):
    """An exact decimal number (never a float)."""

    name = "decimal"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, Decimal):
            return value
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            self.fail(f"{value!r} is not a decimal number", param, ctx)
        if not number.is_finite():
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class Timestamp(click.ParamType):
    """An ISO 8601 time; without a zone it is UTC."""

    name = "timestamp"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 time (2025-01-31T00:00:00Z)", param, ctx)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class Day(click.ParamType):
    name = "date"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a date (YYYY-MM-DD)", param, ctx)


DECIMAL = DecimalType()
TIMESTAMP = Timestamp()
DAY = Day()


@contextmanager
def connect(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    """A connection whose pipeline errors become one-line click errors.

    Only the database is needed, so a missing Kafka broker does not stop these commands.
    """
    try:
        with psycopg.connect(database_url(settings)) as conn:
            yield conn
    except PipelineError as exc:
        raise click.ClickException(str(exc)) from None


def _usd(amount: Decimal) -> str:
    return format(amount.normalize(), "f")


def _fmt_change(change: prices.PriceChange) -> str:
    new = f"in {_usd(change.new.input_per_1k)}, out {_usd(change.new.output_per_1k)}"
    if change.previous is None:
        return f"new price {new}"
    old = f"in {_usd(change.previous.input_per_1k)}, out {_usd(change.previous.output_per_1k)}"
    pct = f" ({change.change_percent_input}% / {change.change_percent_output}%)"
    return f"{old} -> {new}{pct}"


# prices


def _components(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> tuple[Rate, ...]:
    try:
        return tuple(prices.parse_component(v) for v in values)
    except PriceError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.group(name="prices")
def prices_group() -> None:
    """Vendor prices per 1,000 tokens, effective-dated."""


@prices_group.command(name="set")
@click.argument("provider")
@click.argument("model")
@click.option("--input", "input_price", type=DECIMAL, required=True, help="USD per 1k input.")
@click.option("--output", "output_price", type=DECIMAL, required=True, help="USD per 1k output.")
@click.option("--cache-input", type=DECIMAL, default=None, help="USD per 1k cache writes.")
@click.option("--cache-hit", type=DECIMAL, default=None, help="USD per 1k cached input.")
@click.option(
    "--component", "components", multiple=True, callback=_components,
    help=f"An exact price beyond the four above (repeatable): {prices.COMPONENT_SPEC_HELP}.",
)  # fmt: skip
@click.option("--effective-from", type=TIMESTAMP, required=True)
@click.pass_obj
def set_price_command(
    settings: Settings,
    provider: str,
    model: str,
    input_price: Decimal,
    output_price: Decimal,
    cache_input: Decimal | None,
    cache_hit: Decimal | None,
    components: tuple[Rate, ...],
    effective_from: datetime,
) -> None:
    """Make MODEL of PROVIDER cost the given prices from --effective-from on.

    Components are the prices the four columns cannot hold: a long-prompt tier
    (`input>200000=0.006`: prompts of more than 200,000 tokens), a service tier
    (`output:priority=0.02`; tiers standard, batch, flex, priority), cache_write_1h,
    reasoning, audio_input, audio_output, image_input, web_search (per query),
    web_search_prompt (per request that searched), request.
    """
    with connect(settings) as conn:
        change = prices.set_price(
            conn, provider, model, input_price, output_price, cache_input, cache_hit,
            effective_from, components,
        )  # fmt: skip
    if not change.applied:
        click.echo(f"{provider} {model}: unchanged (that price is already in effect)")
    else:
        click.echo(f"{provider} {model}: {_fmt_change(change)} from {effective_from.isoformat()}")


@prices_group.command(name="import")
@click.option(
    "--litellm",
    "path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="LiteLLM model_prices_and_context_window.json.",
)
@click.option("--effective-from", type=TIMESTAMP, default=None, help="Default: now.")
@click.pass_obj
def import_command(settings: Settings, path: Path, effective_from: datetime | None) -> None:
    """Import the chat/completion prices of a LiteLLM price map; prints what changed."""
    start = effective_from or datetime.now(UTC)
    with connect(settings) as conn:
        result = prices.import_litellm(conn, path, start)
    for provider in result.providers_created:
        click.echo(f"new provider {provider}")
    for item in result.changes:
        click.echo(f"{item.provider} {item.model_name}: {_fmt_change(item.change)}")
    added = sum(1 for c in result.changes if c.change.previous is None)
    skipped = ", ".join(f"{k} {v}" for k, v in result.skipped.items()) or "none"
    click.echo(
        f"{added} new, {len(result.changes) - added} changed, {result.unchanged} unchanged; "
        f"skipped: {skipped}"
    )


@prices_group.command(name="stale")
@click.option("--at", type=TIMESTAMP, default=None, help="Default: now.")
@click.option(
    "--format", "fmt", type=click.Choice(reports.FORMATS), default="table", show_default=True
)
@click.pass_obj
def stale_command(settings: Settings, at: datetime | None, fmt: str) -> None:
    """Prices in effect whose last verification is older than their verification_frequency_days,
    most used first (requests of the last 7 days). An import or `prices set` that finds a price
    unchanged verifies it."""
    with connect(settings) as conn:
        result = verification.stale_prices(conn, at or datetime.now(UTC))
    click.echo(reports.render(result, fmt, empty="no price is overdue for verification"))


# margins


@click.group(name="margins")
def margins_group() -> None:
    """Margin multipliers: propose, then approve."""


@margins_group.command(name="propose")
@click.option("--scope", type=click.Choice(margin_configs.SCOPE_TYPES), required=True)
@click.option("--multiplier", type=DECIMAL, required=True)
@click.option("--by", "created_by", type=click.UUID, required=True, help="Proposing admin.")
@click.option("--tier", default=None)
@click.option("--provider", default=None, help="Provider name or api_type.")
@click.option("--model", default=None)
@click.option("--effective-from", type=TIMESTAMP, required=True)
@click.option("--reason", required=True, help="Short reason code, e.g. vendor_price_change.")
@click.option("--details", default=None, help="Free text.")
@click.pass_obj
def propose_command(
    settings: Settings,
    scope: str,
    multiplier: Decimal,
    created_by: UUID,
    tier: str | None,
    provider: str | None,
    model: str | None,
    effective_from: datetime,
    reason: str,
    details: str | None,
) -> None:
    """Propose a margin multiplier (pending until approved)."""
    with connect(settings) as conn:
        provider_id = None
        if provider is not None:
            with conn.cursor() as cur:
                provider_id = prices.find_provider(cur, provider)
        proposal = margin_configs.propose(
            conn, scope, multiplier, created_by, tier=tier, provider_id=provider_id,
            model_id=model, effective_from=effective_from, reason=reason, reason_details=details,
            usd_per_credit=settings.usd_per_credit,
        )  # fmt: skip
    f = proposal.forecast
    click.echo(
        f"proposed {proposal.config_id} (pending approval): over the last "
        f"{FORECAST_DAYS} days, {f.requests:,} requests in its scope would have been charged "
        f"{f.proposed_credits:,} credits instead of {f.charged_credits:,}: revenue "
        f"{_signed_usd(f.revenue_impact_usd)}, gross margin {_signed_usd(f.margin_change_usd)}"
    )


def _signed_usd(amount: Decimal) -> str:
    return f"{'-' if amount < 0 else '+'}${abs(amount):,.2f}"


@margins_group.command(name="show")
@click.argument("config_id", type=click.UUID)
@click.option(
    "--format", "fmt", type=click.Choice(reports.FORMATS), default="table", show_default=True
)
@click.pass_obj
def show_command(settings: Settings, config_id: UUID, fmt: str) -> None:
    """One margin config, any status, with its forecast (expected_revenue_impact and
    expected_margin_change_dollars: the last 30 days of its scope charged at it)."""
    with connect(settings) as conn:
        found = margin_configs.show(conn, config_id)
    if fmt != "table":
        click.echo(reports.render(found, fmt))
        return
    width = max(map(len, found.columns))
    for column, value in zip(found.columns, found.rows[0], strict=True):
        click.echo(f"{column:<{width}}  {reports.text(value)}")


@margins_group.command(name="list")
@click.option("--pending", is_flag=True, help="Only the configs waiting for approval.")
@click.option(
    "--format", "fmt", type=click.Choice(reports.FORMATS), default="table", show_default=True
)
@click.pass_obj
def list_command(settings: Settings, pending: bool, fmt: str) -> None:
    """Margin configs waiting for approval, oldest first, with their forecasts."""
    if not pending:
        raise click.UsageError("only --pending is listed; `margins show ID` shows any config")
    with connect(settings) as conn:
        found = margin_configs.pending(conn)
    click.echo(reports.render(found, fmt, empty="no margin config is waiting for approval"))


@margins_group.command(name="approve")
@click.argument("config_id", type=click.UUID)
@click.option("--by", "approved_by", type=click.UUID, required=True, help="Approving admin.")
@click.pass_obj
def approve_command(settings: Settings, config_id: UUID, approved_by: UUID) -> None:
    """Approve a pending margin config; it replaces the approved one of its scope."""
    with connect(settings) as conn:
        approval = margin_configs.approve(conn, config_id, approved_by)
    ended = f"; ended {approval.replaced}" if approval.replaced else ""
    click.echo(f"approved {config_id}{ended}")


# credits (the group lives in pipeline.cli.ledger_commands)


@credits.command(name="expire")
@click.option("--now", "now", type=TIMESTAMP, default=None, help="Default: the current time.")
@click.pass_obj
def expire_command(settings: Settings, now: datetime | None) -> None:
    """Expire every credit source whose expiry has passed."""
    with connect(settings) as conn:
        expired = movements.expire(conn, now or datetime.now(UTC))
    click.echo(f"expired {expired} credits")


@credits.command(name="reverse")
@click.argument("request_id", type=click.UUID)
@click.option("--reason", required=True)
@click.option("--by", "by", type=click.UUID, required=True, help="Reversing admin.")
@click.pass_obj
def reverse_command(settings: Settings, request_id: UUID, reason: str, by: UUID) -> None:
    """Refund the credits deducted for REQUEST_ID (once)."""
    with connect(settings) as conn:
        result = movements.reverse(conn, request_id, reason, by)
    if not result.applied:
        click.echo(f"request {request_id} was already reversed; nothing changed")
    else:
        click.echo(
            f"refunded {result.credits_refunded} credits to {result.user_id}: "
            f"balance {result.balance_before} -> {result.balance_after}"
        )


# report


@click.group(name="report")
def report_group() -> None:
    """Reports from the daily summaries."""


@report_group.command(name="daily")
@click.option("--from", "start", type=DAY, required=True)
@click.option("--to", "end", type=DAY, required=True)
@click.option("--user", type=click.UUID, default=None)
@click.option("--by", type=click.Choice(reports.GROUPINGS), default="user", show_default=True)
@click.option(
    "--format", "fmt", type=click.Choice(reports.FORMATS), default="table", show_default=True
)
@click.pass_obj
def daily_command(
    settings: Settings, start: date, end: date, user: UUID | None, by: str, fmt: str
) -> None:
    """Usage per day and user (or model) from --from to --to, inclusive."""
    with connect(settings) as conn:
        result = reports.daily_report(conn, start, end, user, by)
    click.echo(reports.render(result, fmt))


@report_group.command(name="credits")
@click.option("--at", type=TIMESTAMP, default=None, help="Default: now.")
@click.option("--format", "fmt", type=click.Choice(("table", "json")), default="table",
              show_default=True)  # fmt: skip
@click.pass_obj
def credits_report_command(settings: Settings, at: datetime | None, fmt: str) -> None:
    """Credit liability at --at: prepaid credits outstanding and overdraft exposure (credits
    and USD), by source type and expiry (at the present moment), and per month the credits
    granted, used, expired and reversed, with the identity that ties them to the balances."""
    now = datetime.now(UTC)
    with connect(settings) as conn:
        found = liability.liability(conn, at or now, now, settings.usd_per_credit)
    if fmt == "json":
        click.echo(json.dumps(liability.as_json(found), indent=2))
    else:
        click.echo("\n".join(liability.as_text(found)))


@report_group.command(name="margins")
@click.option("--from", "start", type=DAY, required=True)
@click.option("--to", "end", type=DAY, required=True)
@click.option("--by", type=click.Choice(margin_report.GROUPINGS), default="tier", show_default=True)
@click.option(
    "--format", "fmt", type=click.Choice(reports.FORMATS), default="table", show_default=True
)
@click.pass_obj
def margins_command(settings: Settings, start: date, end: date, by: str, fmt: str) -> None:
    """Realized gross margin per tier, provider, model or pricing config of the requests
    started from --from to --to (UTC days, inclusive), against the monitored configs'
    targets: below_target flags a group that earns less than its target."""
    with connect(settings) as conn:
        result = margin_report.margin_report(conn, start, end, by)
    click.echo(reports.render(result, fmt))


@report_group.command(name="html")
@click.option("--from", "start", type=DAY, required=True)
@click.option("--to", "end", type=DAY, required=True)
@click.option("-o", "--output", required=True,
              type=click.Path(dir_okay=False, writable=True, path_type=Path))  # fmt: skip
@click.pass_obj
def html_command(settings: Settings, start: date, end: date, output: Path) -> None:
    """One self-contained HTML page for finance, from --from to --to (UTC days, inclusive):
    billed value, vendor cost and gross margin per day; margins by model and by tier against
    target; the top users by spend; outstanding credits, upcoming expiries and overdraft.
    Its tables hold the figures of `report daily`, `report margins` and `report credits`."""
    from pipeline.money import html_report  # plotly: only this command needs it

    now = datetime.now(UTC)
    with connect(settings) as conn:
        figures = html_report.read(conn, start, end, now, settings.usd_per_credit)
    output.write_text(html_report.page(figures, now), encoding="utf-8")
    click.echo(f"wrote {output} ({output.stat().st_size:,} bytes)")
