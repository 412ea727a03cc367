"""Finance's page: `report html`, one self-contained HTML file.

It is made of the reports the CLI prints, so its tables carry their exact figures:
`report daily --by model` summed per day, `report daily --by user` summed per user (the
top spenders), `report margins --by tier` and `--by model`, and `report credits`
at the moment it is made. The charts are plotly figures drawn from the same figures, with
plotly.js written into the page once, so the file opens with no network.
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import plotly.graph_objects as go
import psycopg

from pipeline.money import liability as credits
from pipeline.money import margin_report
from pipeline.money import report as reports
from pipeline.money.report import Report

TOP_USERS = 10
TOP_MODELS = 10
_COLORS = {"billed": "#2f6f9f", "cost": "#d1803b", "margin": "#3d9a5b", "target": "#9b3b3b"}


@dataclass(frozen=True)
class FinanceFigures:
    """What the page shows, read in one go."""

    start: date
    end: date
    by_model: Report
    """`report daily --by model`."""
    by_user: Report
    """`report daily --by user`."""
    tiers: Report
    """`report margins --by tier`."""
    models: Report
    """`report margins --by model`."""
    credits: credits.Liability
    """`report credits` now."""


def read(
    conn: psycopg.Connection[Any], start: date, end: date, now: datetime, usd_per_credit: Decimal
) -> FinanceFigures:
    position = credits.liability(conn, now, now, usd_per_credit)  # first: its own snapshot
    return FinanceFigures(
        start,
        end,
        reports.daily_report(conn, start, end, by="model"),
        reports.daily_report(conn, start, end, by="user"),
        margin_report.margin_report(conn, start, end, "tier"),
        margin_report.margin_report(conn, start, end, "model"),
        position,
    )


# The functional core: figures -> tables -> page.


def summed(report: Report, keys: Sequence[str], values: Sequence[str]) -> Report:
    """`report`'s `values` columns summed per distinct `keys`, in key order."""
    index = {c: i for i, c in enumerate(report.columns)}
    sums: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0] * len(values))
    for row in report.rows:
        total = sums[tuple(row[index[k]] for k in keys)]
        for i, name in enumerate(values):
            total[i] += row[index[name]]
    return Report((*keys, *values), tuple((*k, *v) for k, v in sorted(sums.items())))


def daily_totals(figures: FinanceFigures) -> Report:
    """Per day: requests, vendor cost, billed value and gross margin (all models)."""
    values = ("requests", "vendor_cost_usd", "credit_value_usd", "gross_margin_usd")
    return summed(figures.by_model, ("day",), values)


def top_users(figures: FinanceFigures, count: int = TOP_USERS) -> Report:
    """The `count` users who spent the most credits in the period."""
    values = ("requests", "credits_deducted", "vendor_cost_usd", "gross_margin_usd")
    per_user = summed(figures.by_user, ("user_id",), values)
    spent = per_user.columns.index("credits_deducted")
    ranked = sorted(per_user.rows, key=lambda r: (-r[spent], str(r[0])))[:count]
    return Report(per_user.columns, tuple(ranked))


def credit_position(figures: FinanceFigures) -> Report:
    """Outstanding credits and overdraft exposure, and the outstanding credits by expiry."""
    c = figures.credits
    rows: list[tuple[Any, ...]] = [
        ("outstanding", c.outstanding, c.usd(c.outstanding)),
        ("overdraft", c.overdraft, c.usd(c.overdraft)),
    ]
    rows += [(f"expiring {bucket}", n, c.usd(n)) for bucket, n in c.by_expiry.items()]
    return Report(("figure", "credits", "usd"), tuple(rows))


def page(figures: FinanceFigures, made_at: datetime) -> str:
    """The whole page: one section per view, each a chart and the table it is drawn from."""
    days, tiers, models = daily_totals(figures), figures.tiers, figures.models
    users, position = top_users(figures), credit_position(figures)
    sections = [
        ("daily", "Billed value, vendor cost and gross margin per day", _daily_chart(days), days),
        ("models", f"Margins by model (top {TOP_MODELS} by billed value in the chart)",
         _models_chart(models), models),
        ("tiers", "Margins against target by tier", _tiers_chart(tiers), tiers),
        ("users", f"Top {TOP_USERS} users by credits spent", _users_chart(users), users),
        ("credits", "Outstanding credits, upcoming expiries and overdraft exposure",
         _credits_chart(position), position),
    ]  # fmt: skip
    body = []
    for i, (name, title, figure, table) in enumerate(sections):
        chart = figure.to_html(
            full_html=False,
            include_plotlyjs=i == 0,  # plotly.js once, inline: the file needs no network
            div_id=f"chart-{name}",
            config={"displayModeBar": False, "responsive": True},
        )
        body.append(
            f'<section id="{name}"><h2>{html.escape(title)}</h2>'
            f'<div class="chart">{chart}</div>{_table(name, table)}</section>'
        )
    period = f"{figures.start.isoformat()} to {figures.end.isoformat()}"
    identity = "reconciles" if figures.credits.reconciles else "DOES NOT RECONCILE"
    return _PAGE.format(
        period=html.escape(period),
        made=html.escape(made_at.isoformat(timespec="seconds")),
        identity=identity,
        body="\n".join(body),
    )


def _table(name: str, report: Report) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in report.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(reports.text(v))}</td>" for v in row) + "</tr>"
        for row in report.rows
    )
    empty = "" if report.rows else '<p class="empty">nothing in this period</p>'
    return (
        f'<div class="table"><table id="table-{name}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{rows}</tbody></table></div>{empty}"
    )


def _column(report: Report, name: str) -> list[Any]:
    i = report.columns.index(name)
    return [row[i] for row in report.rows]


def _chart(x: list[str], traces: list[tuple[str, list[Any], str, str]], y_title: str) -> go.Figure:
    """A figure over `x` of (name, values, colour, kind) traces, kind `bar`, `line` or `mark`."""
    shapes = {
        "bar": lambda name, y, color: go.Bar(name=name, x=x, y=y, marker_color=color),
        "line": lambda name, y, color: go.Scatter(
            name=name, x=x, y=y, mode="lines+markers", marker_color=color
        ),
        "mark": lambda name, y, color: go.Scatter(
            name=name, x=x, y=y, mode="markers", marker_color=color,
            marker={"size": 16, "symbol": "line-ew-open", "line": {"width": 3}},
        ),
    }  # fmt: skip
    figure = go.Figure([shapes[kind](name, y, color) for name, y, color, kind in traces])
    figure.update_layout(
        height=340, margin={"l": 60, "r": 20, "t": 20, "b": 60}, yaxis_title=y_title,
        legend={"orientation": "h", "y": -0.25}, plot_bgcolor="#fafafa",
    )  # fmt: skip
    figure.update_xaxes(type="category")  # days, names: never a time or number axis
    return figure


def _daily_chart(days: Report) -> go.Figure:
    x = [d.isoformat() for d in _column(days, "day")]
    traces = [
        ("billed", _column(days, "credit_value_usd"), _COLORS["billed"], "bar"),
        ("vendor cost", _column(days, "vendor_cost_usd"), _COLORS["cost"], "bar"),
        ("gross margin", _column(days, "gross_margin_usd"), _COLORS["margin"], "line"),
    ]
    return _chart(x, traces, "USD")


def _models_chart(models: Report) -> go.Figure:
    top = Report(models.columns, models.rows[:TOP_MODELS])  # ordered by billed value
    x = [f"{p} {m}" for p, m in zip(_column(top, "provider"), _column(top, "model"), strict=True)]
    traces = [
        ("billed", _column(top, "billed_usd"), _COLORS["billed"], "bar"),
        ("vendor cost", _column(top, "vendor_cost_usd"), _COLORS["cost"], "bar"),
    ]
    return _chart(x, traces, "USD")


def _tiers_chart(tiers: Report) -> go.Figure:
    traces = [
        ("realized gross margin %", _column(tiers, "gross_margin_percent"), _COLORS["margin"],
         "bar"),
        ("target %", _column(tiers, "target_percent"), _COLORS["target"], "mark"),
    ]  # fmt: skip
    return _chart([str(t) for t in _column(tiers, "tier")], traces, "percent")


def _users_chart(users: Report) -> go.Figure:
    x = [str(u)[:8] for u in _column(users, "user_id")]
    return _chart(x, [("credits spent", _column(users, "credits_deducted"),
                       _COLORS["billed"], "bar")], "credits")  # fmt: skip


def _credits_chart(position: Report) -> go.Figure:
    x = _column(position, "figure")
    return _chart(x, [("credits", _column(position, "credits"), _COLORS["billed"], "bar")],
                  "credits")  # fmt: skip


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Usage and credits: {period}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #222; }}
h1 {{ font-size: 1.5rem; }} h2 {{ font-size: 1.15rem; margin-top: 2.5rem; }}
.table {{ overflow-x: auto; }}
table {{ border-collapse: collapse; font-size: 0.85rem; margin-top: 0.5rem; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: right;
          white-space: nowrap; }}
th:first-child, td:first-child {{ text-align: left; }}
.note {{ color: #555; font-size: 0.9rem; }}
</style></head>
<body>
<h1>Usage and credits, {period}</h1>
<p class="note">Made {made} from the daily summaries and the ledgers; every table holds the
exact figures of the matching CLI report (money in USD as exact decimals, credits as whole
numbers); the credit identity {identity}.</p>
{body}
</body></html>
"""
