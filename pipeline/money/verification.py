"""Vendor prices due for verification: in effect, and last verified longer ago than their
`verification_frequency_days`. A price is verified when it is written and whenever an
import or `prices set` finds it unchanged (`prices._write_price`).

`stale_prices` lists them for `prices stale`, most used first (requests of the last 7 UTC
days, from the per-model summary); the worker exports how many there are as a gauge
(`pipeline.stream.timers`), which `deploy/prometheus/alerts.yml` alerts on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from pipeline.money.report import Report

USAGE_DAYS = 7

_STALE_AT = """
    p.is_active
    AND p.effective_from <= %(at)s AND (p.effective_until IS NULL OR p.effective_until > %(at)s)
    AND p.last_verified + make_interval(days => p.verification_frequency_days) < %(at)s
"""

STALE_COUNT = f"SELECT count(*) FROM model_provider_pricing p WHERE {_STALE_AT}"
"""How many prices in effect at %(at)s are overdue for verification."""

_STALE = f"""
SELECT pr.name AS provider, p.model_name AS model, p.last_verified,
       p.verification_frequency_days AS verify_every_days,
       p.last_verified + make_interval(days => p.verification_frequency_days) AS due,
       coalesce(u.requests, 0) AS requests_last_{USAGE_DAYS}_days
FROM model_provider_pricing p
JOIN providers pr ON pr.id = p.provider_id
LEFT JOIN (
    SELECT provider_id, model_id, sum(total_requests)::bigint AS requests
    FROM model_usage_daily_summary
    WHERE summary_date > (%(at)s AT TIME ZONE 'UTC')::date - {USAGE_DAYS}
      AND summary_date <= (%(at)s AT TIME ZONE 'UTC')::date
    GROUP BY provider_id, model_id
) u ON u.provider_id = p.provider_id AND u.model_id = p.model_name
WHERE {_STALE_AT}
ORDER BY 6 DESC, 1, 2
"""


def stale_prices(conn: psycopg.Connection[Any], at: datetime) -> Report:
    """The prices in effect at `at` that are overdue for verification, most used first."""
    with conn.cursor() as cur:
        cur.execute(_STALE, {"at": at})
        assert cur.description is not None
        columns = tuple(c.name for c in cur.description)
        rows = tuple(tuple(r) for r in cur.fetchall())
    return Report(columns, rows)
