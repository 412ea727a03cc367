"""Margin multipliers: proposing a `pricing_configs` row and approving it.

A proposal is pending and prices nothing; the pipeline only reads approved, active rows.
It is stored with what it would have done to the last 30 days of requests
(`margin_forecast`: expected_revenue_impact, expected_margin_change_dollars), which
`pending` and `show` let the approver read.
Approving a config ends the approved config of the same scope it replaces (its
`effective_until` becomes the new row's `effective_from`), so exactly one multiplier of a
scope is in effect at any moment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, NamedTuple
from uuid import UUID

import psycopg
from psycopg import sql

from pipeline.core.pricing import SCOPE_RANK, MarginConfig
from pipeline.errors import PipelineError
from pipeline.money.margin_forecast import Forecast, forecast_from_ledger
from pipeline.money.report import Report

SCOPE_TYPES = tuple(sorted(SCOPE_RANK, key=SCOPE_RANK.__getitem__))
MAX_MULTIPLIER = Decimal("99.99")  # NUMERIC(4,2)
MAX_PERCENT = Decimal("999.99")  # NUMERIC(5,2)


class MarginError(PipelineError):
    """A proposal or approval the books cannot take."""


@dataclass(frozen=True, slots=True)
class Scope:
    scope_type: str
    tier: str | None = None
    provider_id: UUID | None = None
    model_id: str | None = None


class Proposal(NamedTuple):
    config_id: UUID
    forecast: Forecast


@dataclass(frozen=True, slots=True)
class Approval:
    config_id: UUID
    replaced: UUID | None
    """The approved config of the same scope this one ended, if any."""


def scope_problem(scope: Scope) -> str | None:
    """Why the scope's fields do not fit its type, or None.

    tier, provider: exactly that field; model: the model, optionally at one provider;
    combination: at least two of tier, provider and model.
    """
    given = {
        "tier": scope.tier is not None,
        "provider": scope.provider_id is not None,
        "model": scope.model_id is not None,
    }
    count = sum(given.values())
    if scope.scope_type not in SCOPE_RANK:
        return f"scope must be one of {', '.join(SCOPE_TYPES)}"
    if scope.scope_type == "combination":
        return None if count >= 2 else "a combination scope needs two of tier, provider, model"
    if not given[scope.scope_type]:
        return f"a {scope.scope_type} scope needs its {scope.scope_type}"
    extra = [k for k, v in given.items() if v and k != scope.scope_type]
    if scope.scope_type == "model":
        extra = [k for k in extra if k != "provider"]
    if extra:
        return f"a {scope.scope_type} scope takes no {' or '.join(extra)}"
    return None


def multiplier_problem(multiplier: Decimal) -> str | None:
    if not multiplier.is_finite() or multiplier <= 0:
        return "the multiplier must be positive"
    if multiplier > MAX_MULTIPLIER or multiplier != multiplier.quantize(Decimal("0.01")):
        return f"the multiplier must have at most 2 decimals and be at most {MAX_MULTIPLIER}"
    return None


def change_percent(previous: Decimal | None, new: Decimal) -> Decimal | None:
    """Percent change over the multiplier replaced; None if none or not NUMERIC(5,2)."""
    if previous is None or previous == 0:
        return None
    percent = ((new - previous) * 100 / previous).quantize(
        Decimal("0.01"), rounding=ROUND_HALF_EVEN
    )
    return percent if abs(percent) <= MAX_PERCENT else None


_SAME_SCOPE = sql.SQL("""
    scope_type = %(scope_type)s
    AND subscription_tier IS NOT DISTINCT FROM %(tier)s::subscription_tier
    AND provider_id IS NOT DISTINCT FROM %(provider_id)s::uuid
    AND model_id IS NOT DISTINCT FROM %(model_id)s::text
    AND approval_status = 'approved' AND is_active
""")


def _scope_params(scope: Scope) -> dict[str, Any]:
    return {
        "scope_type": scope.scope_type,
        "tier": scope.tier,
        "provider_id": scope.provider_id,
        "model_id": scope.model_id,
    }


def propose(
    conn: psycopg.Connection[Any],
    scope_type: str,
    multiplier: Decimal,
    created_by: UUID,
    *,
    tier: str | None = None,
    provider_id: UUID | None = None,
    model_id: str | None = None,
    effective_from: datetime,
    reason: str,
    reason_details: str | None = None,
    usd_per_credit: Decimal,
    now: datetime | None = None,
) -> Proposal:
    """Record a pending config with its forecast over the 30 days before `now` (default:
    the clock); previous_multiplier is the approved one it would replace."""
    scope = Scope(scope_type, tier, provider_id, model_id)
    problem = scope_problem(scope) or multiplier_problem(multiplier)
    if not reason.strip() or len(reason) > 50:
        problem = problem or "the reason must be 1 to 50 characters"
    if problem:
        raise MarginError(problem)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            sql.SQL("""
            SELECT margin_multiplier FROM pricing_configs
            WHERE {} AND effective_from <= %(at)s
              AND (effective_until IS NULL OR effective_until > %(at)s)
            ORDER BY effective_from DESC LIMIT 1
            """).format(_SAME_SCOPE),
            _scope_params(scope) | {"at": effective_from},
        )
        row = cur.fetchone()
        previous: Decimal | None = row[0] if row else None
        try:
            cur.execute(
                """
                INSERT INTO pricing_configs (
                    scope_type, subscription_tier, provider_id, model_id, margin_multiplier,
                    effective_from, reason, reason_details, previous_multiplier,
                    change_percent, created_by, approval_status)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'pending')
                RETURNING id
                """,
                (
                    scope.scope_type, scope.tier, scope.provider_id, scope.model_id,
                    multiplier, effective_from, reason, reason_details, previous,
                    change_percent(previous, multiplier), created_by,
                ),
            )  # fmt: skip
        except psycopg.errors.ForeignKeyViolation:
            raise MarginError("unknown creator or provider") from None
        except psycopg.errors.InvalidTextRepresentation:
            raise MarginError(f"unknown tier {scope.tier!r}") from None
        created = cur.fetchone()
        assert created is not None
        config_id = UUID(str(created[0]))
        proposal = MarginConfig(config_id, scope.scope_type, scope.tier, scope.provider_id,
                                scope.model_id, multiplier, effective_from, None)  # fmt: skip
        expected = forecast_from_ledger(cur, proposal, usd_per_credit, now or datetime.now(UTC))
        cur.execute(
            """
            UPDATE pricing_configs
            SET expected_revenue_impact = %s, expected_margin_change_dollars = %s
            WHERE id = %s
            """,
            (expected.revenue_impact_usd, expected.margin_change_usd, config_id),
        )
        return Proposal(config_id, expected)


def approve(conn: psycopg.Connection[Any], config_id: UUID, approved_by: UUID) -> Approval:
    """Approve a pending config and end the approved config of its scope it replaces."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            """
            SELECT scope_type, subscription_tier::text, provider_id, model_id, effective_from,
                   approval_status
            FROM pricing_configs WHERE id = %s FOR UPDATE
            """,
            (config_id,),
        )
        row = cur.fetchone()
        if row is None:
            raise MarginError(f"no pricing config {config_id}")
        if row[5] != "pending":
            raise MarginError(f"pricing config {config_id} is {row[5]}, not pending")
        cur.execute("SELECT 1 FROM users WHERE id = %s", (approved_by,))
        if cur.fetchone() is None:
            raise MarginError(f"no user {approved_by} to approve")
        scope = Scope(row[0], row[1], row[2], row[3])
        params = _scope_params(scope) | {"at": row[4], "id": config_id}
        # The approved rows of the scope must not change under us: one approval per scope.
        cur.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
            (f"margin:{scope.scope_type}:{scope.tier}:{scope.provider_id}:{scope.model_id}",),
        )
        cur.execute(
            sql.SQL("""
            UPDATE pricing_configs SET effective_until = %(at)s, updated_at = now()
            WHERE {} AND id <> %(id)s AND effective_from < %(at)s
              AND (effective_until IS NULL OR effective_until > %(at)s)
            RETURNING id
            """).format(_SAME_SCOPE),
            params,
        )
        replaced = cur.fetchone()
        # A later approved config of the scope (scheduled ahead) ends this one.
        cur.execute(
            sql.SQL("""
            SELECT min(effective_from) FROM pricing_configs
            WHERE {} AND effective_from > %(at)s
            """).format(_SAME_SCOPE),
            params,
        )
        later = cur.fetchone()
        try:
            cur.execute(
                """
                UPDATE pricing_configs
                SET approval_status = 'approved', approved_by = %s, updated_at = now(),
                    effective_until = coalesce(%s, effective_until)
                WHERE id = %s
                """,
                (approved_by, later[0] if later else None, config_id),
            )
        except psycopg.errors.UniqueViolation:
            raise MarginError(
                "an approved config of the same scope starts at the same moment"
            ) from None
        return Approval(config_id, UUID(str(replaced[0])) if replaced else None)


_CONFIGS = sql.SQL("""
SELECT c.id, c.approval_status AS status, c.scope_type AS scope,
       c.subscription_tier::text AS tier, p.name AS provider, c.model_id AS model,
       c.margin_multiplier AS multiplier, c.previous_multiplier, c.change_percent,
       c.expected_revenue_impact, c.expected_margin_change_dollars,
       c.target_gross_margin_percent, c.effective_from, c.effective_until, c.reason,
       c.reason_details, c.created_at, c.created_by, c.approved_by
FROM pricing_configs c LEFT JOIN providers p ON p.id = c.provider_id
WHERE {}
ORDER BY c.created_at, c.id
""")


def _configs(conn: psycopg.Connection[Any], where: sql.SQL, params: tuple[Any, ...]) -> Report:
    with conn.cursor() as cur:
        cur.execute(_CONFIGS.format(where), params)
        assert cur.description is not None
        columns = tuple(c.name for c in cur.description)
        return Report(columns, tuple(tuple(r) for r in cur.fetchall()))


def pending(conn: psycopg.Connection[Any]) -> Report:
    """The configs waiting for approval, oldest first, with their forecasts."""
    return _configs(conn, sql.SQL("c.approval_status = 'pending' AND c.is_active"), ())


def show(conn: psycopg.Connection[Any], config_id: UUID) -> Report:
    """One config (any status) with its forecast; MarginError if there is none."""
    found = _configs(conn, sql.SQL("c.id = %s"), (config_id,))
    if not found.rows:
        raise MarginError(f"no pricing config {config_id}")
    return found
