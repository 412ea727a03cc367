"""Daily usage reports read from the summary tables (never from the ledgers).

`daily_report` queries; `render` turns the rows into a table, CSV or JSON, exactly (money
stays `Decimal` and is written as its decimal text).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg

from pipeline import tables
from pipeline.errors import PipelineError

GROUPINGS = ("user", "model")
FORMATS = ("table", "csv", "json")


class ReportError(PipelineError):
    """A report that cannot be made from the summaries."""


@dataclass(frozen=True, slots=True)
class Report:
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]


# Per day and user: `report daily`, and the gateway API's /v1/users/{user_id}/usage.
BY_USER = """
SELECT coalesce(t.summary_date, c.summary_date) AS day,
       coalesce(t.user_id, c.user_id) AS user_id,
       coalesce(t.total_requests, 0) AS requests,
       coalesce(t.total_input_tokens, 0) AS input_tokens,
       coalesce(t.total_output_tokens, 0) AS output_tokens,
       coalesce(t.total_vendor_cost, 0) AS vendor_cost_usd,
       coalesce(t.total_credits_deducted, 0) AS credits_deducted,
       coalesce(t.total_gross_margin, 0) AS gross_margin_usd,
       coalesce(c.total_requests, 0) AS charged_requests,
       t.success_rate AS success_rate_percent,
       t.avg_request_latency_ms
FROM token_usage_daily_summary t
FULL JOIN credit_usage_daily_summary c
       ON c.user_id = t.user_id AND c.summary_date = t.summary_date
WHERE coalesce(t.summary_date, c.summary_date) BETWEEN %(from)s AND %(to)s
  AND (%(user)s::uuid IS NULL OR coalesce(t.user_id, c.user_id) = %(user)s)
ORDER BY 1, 2
"""

_BY_MODEL = """
SELECT m.summary_date AS day, p.name AS provider, m.model_id AS model,
       m.total_requests AS requests, m.total_input_tokens AS input_tokens,
       m.total_output_tokens AS output_tokens,
       m.total_cached_input_tokens AS cached_input_tokens,
       m.total_cache_write_tokens AS cache_write_tokens,
       m.total_vendor_cost AS vendor_cost_usd, m.total_credits_deducted AS credits_deducted,
       m.total_credit_value_usd AS credit_value_usd, m.total_gross_margin AS gross_margin_usd,
       m.gateway_costed_requests,
       m.total_gateway_cost_usd - m.gateway_costed_vendor_cost AS gateway_cost_gap_usd
FROM model_usage_daily_summary m JOIN providers p ON p.id = m.provider_id
WHERE m.summary_date BETWEEN %(from)s AND %(to)s
ORDER BY 1, 2, 3
"""


def daily_report(
    conn: psycopg.Connection[Any],
    start: date,
    end: date,
    user: UUID | None = None,
    by: str = "user",
) -> Report:
    """Per day and user (or per day, provider and model) from `start` to `end` inclusive."""
    if end < start:
        raise ReportError(f"--to {end} is before --from {start}")
    if by not in GROUPINGS:
        raise ReportError(f"group by one of {', '.join(GROUPINGS)}")
    if by == "model" and user is not None:
        raise ReportError("the per-model summary has no users; drop --user or use --by user")
    with conn.cursor() as cur:
        cur.execute(
            BY_USER if by == "user" else _BY_MODEL, {"from": start, "to": end, "user": user}
        )
        assert cur.description is not None
        columns = tuple(c.name for c in cur.description)
        rows = tuple(tuple(r) for r in cur.fetchall())
    return Report(columns, rows)


def text(value: Any) -> str:
    """A value as the reports write it: money as its exact decimal text, None as nothing."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, int | str | bool):
        return value
    return text(value)


def objects(report: Report) -> list[dict[str, Any]]:
    """The rows as JSON objects, money and dates as their exact text."""
    return [
        {c: _json_value(v) for c, v in zip(report.columns, row, strict=True)} for row in report.rows
    ]


def render(report: Report, fmt: str, empty: str = "no usage in this period") -> str:
    """The report as an aligned text table (`empty` if it has no rows), CSV (with header)
    or a JSON array of objects."""
    if fmt == "json":
        return json.dumps(objects(report), indent=2)
    cells = [[text(v) for v in row] for row in report.rows]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(report.columns)
        writer.writerows(cells)
        return out.getvalue().rstrip("\n")
    if fmt != "table":
        raise ReportError(f"format must be one of {', '.join(FORMATS)}")
    if not cells:
        return empty
    numeric = [all(_is_number(r[i]) for r in cells) for i in range(len(report.columns))]
    return tables.text(report.columns, cells, right=numeric)


def _is_number(text: str) -> bool:
    return text == "" or text.lstrip("-").replace(".", "", 1).isdigit()
