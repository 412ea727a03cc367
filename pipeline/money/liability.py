"""Credit liability: what the company owes its users in prepaid credits, `report credits`.

Every balance change is a `credit_deduction_ledger` row and a balance starts at 0, so a
user's balance at T is the sum of their rows created up to T: outstanding credits are the
positive balances, overdraft exposure the negative ones. Per month the same rows split into
credits granted (`grant_*`), used (rows of a request), expired (`expiration`, breakage) and
reversed (`reversal`); anything else is `other` (none today). Hence the identity the report
checks and prints: granted - used - expired + reversed + other = outstanding - overdraft.

What the outstanding credits are made of (by source type, by when they expire) comes from
`user_credit_source`, which holds only the present: that part is given for a report at the
present moment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg

from pipeline import tables

EXPIRY_BUCKETS = (("within_7_days", 7), ("within_30_days", 30), ("within_90_days", 90))
FLOWS = ("granted", "used", "expired", "reversed", "other")
PRESENT = timedelta(minutes=1)
"""A report at most this far from the clock is a report of the present."""


@dataclass(frozen=True)
class Liability:
    at: datetime
    usd_per_credit: Decimal
    outstanding: int
    overdraft: int
    months: list[dict[str, Any]]
    """Per month (YYYY-MM): the credits of each of FLOWS."""
    by_source: dict[str, int] = field(default_factory=dict)
    by_expiry: dict[str, int] = field(default_factory=dict)
    """Empty for a report of the past."""

    def totals(self) -> dict[str, int]:
        return {flow: sum(int(m[flow]) for m in self.months) for flow in FLOWS}

    @property
    def reconciles(self) -> bool:
        t = self.totals()
        flows = t["granted"] - t["used"] - t["expired"] + t["reversed"] + t["other"]
        return flows == self.outstanding - self.overdraft

    def usd(self, credits: int) -> Decimal:
        return credits * self.usd_per_credit


_BALANCES = """
SELECT coalesce(sum(b) FILTER (WHERE b > 0), 0), coalesce(-sum(b) FILTER (WHERE b < 0), 0)
FROM (SELECT sum(amount) AS b FROM credit_deduction_ledger WHERE created_at <= %(at)s
      GROUP BY user_id) AS balances
"""

_MONTHS = """
SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM') AS month,
       coalesce(sum(amount) FILTER (WHERE reason LIKE 'grant\\_%%'), 0) AS granted,
       coalesce(-sum(amount) FILTER (WHERE request_id IS NOT NULL), 0) AS used,
       coalesce(-sum(amount) FILTER (WHERE reason = 'expiration'), 0) AS expired,
       coalesce(sum(amount) FILTER (WHERE reason = 'reversal'), 0) AS reversed,
       coalesce(sum(amount) FILTER (WHERE request_id IS NULL AND reason NOT LIKE 'grant\\_%%'
                                    AND reason NOT IN ('expiration', 'reversal')), 0) AS other
FROM credit_deduction_ledger WHERE created_at <= %(at)s
GROUP BY 1 ORDER BY 1
"""

_SOURCES = """
SELECT source, sum(amount)::bigint FROM user_credit_source WHERE amount > 0
GROUP BY source ORDER BY source
"""

_EXPIRY = """
SELECT CASE WHEN expires_at IS NULL THEN 'never'
            WHEN expires_at <= %(at)s + interval '7 days' THEN 'within_7_days'
            WHEN expires_at <= %(at)s + interval '30 days' THEN 'within_30_days'
            WHEN expires_at <= %(at)s + interval '90 days' THEN 'within_90_days'
            ELSE 'later' END AS bucket,
       sum(amount)::bigint
FROM user_credit_source WHERE amount > 0
GROUP BY 1
"""


def liability(
    conn: psycopg.Connection[Any], at: datetime, now: datetime, usd_per_credit: Decimal
) -> Liability:
    """The credit liability at `at`; its make-up by source and expiry if `at` is `now`."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")  # one snapshot
        cur.execute(_BALANCES, {"at": at})
        row = cur.fetchone()
        assert row is not None
        outstanding, overdraft = int(row[0]), int(row[1])
        cur.execute(_MONTHS, {"at": at})
        names = [c.name for c in cur.description or ()]
        months = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        by_source: dict[str, int] = {}
        by_expiry: dict[str, int] = {}
        if abs(at - now) <= PRESENT:
            cur.execute(_SOURCES)
            by_source = {str(r[0]): int(r[1]) for r in cur.fetchall()}
            cur.execute(_EXPIRY, {"at": at})
            found = {str(r[0]): int(r[1]) for r in cur.fetchall()}
            order = [name for name, _ in EXPIRY_BUCKETS] + ["later", "never"]
            by_expiry = {name: found.get(name, 0) for name in order}
    return Liability(at, usd_per_credit, outstanding, overdraft,
                     [{k: (v if k == "month" else int(v)) for k, v in m.items()} for m in months],
                     by_source, by_expiry)  # fmt: skip


def as_json(report: Liability) -> dict[str, Any]:
    usd = report.usd
    return {
        "at": report.at.isoformat(),
        "outstanding_credits": report.outstanding,
        "outstanding_usd": str(usd(report.outstanding)),
        "overdraft_credits": report.overdraft,
        "overdraft_usd": str(usd(report.overdraft)),
        "by_source": report.by_source,
        "by_expiry": report.by_expiry,
        "months": report.months,
        "totals": report.totals(),
        "reconciles": report.reconciles,
    }


def _table(header: tuple[str, ...], cells: list[list[str]]) -> list[str]:
    return tables.text(header, cells, right=[False] + [True] * (len(header) - 1)).splitlines()


def as_text(report: Liability) -> list[str]:
    usd, t = report.usd, report.totals()
    lines = [
        f"credit liability at {report.at.isoformat()}",
        f"outstanding: {report.outstanding:,} credits (${usd(report.outstanding):,.2f})",
        f"overdraft exposure: {report.overdraft:,} credits (${usd(report.overdraft):,.2f})",
        "",
    ]
    if report.by_source:
        lines += _table(("source", "credits"), [[k, f"{v:,}"] for k, v in report.by_source.items()])
        lines += ["", *_table(("expires", "credits"),
                              [[k, f"{v:,}"] for k, v in report.by_expiry.items()])]  # fmt: skip
    else:
        lines.append("(by source and by expiry: for a report at the present moment only)")
    cells = [[m["month"], *(f"{m[f]:,}" for f in FLOWS)] for m in report.months]
    cells.append(["total", *(f"{t[f]:,}" for f in FLOWS)])
    flows = t["granted"] - t["used"] - t["expired"] + t["reversed"] + t["other"]
    verdict = "holds" if report.reconciles else "DOES NOT HOLD"
    return [
        *lines, "", *_table(("month", *FLOWS), cells),
        f"granted - used - expired + reversed + other = {flows:,}; outstanding - overdraft = "
        f"{report.outstanding - report.overdraft:,}: {verdict}",
    ]  # fmt: skip
