"""`usage-pipeline credits subscribe|upgrade|redeem`: plans and coupons, via the grant path.

`COMMANDS` are added to the `credits` group (pipeline.cli.ledger_commands) by `pipeline.cli`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import click

from pipeline.cli.money_commands import DECIMAL, connect
from pipeline.errors import Refused
from pipeline.money import coupons, subscriptions
from pipeline.settings import Settings

TIER_HELP = f"One of {', '.join(subscriptions.SUBSCRIPTION_TIERS)}."
PLAN_HELP = "Required for tiers without a seed price (free, enterprise_*); both or neither."


def _plan(tier: str, price: Decimal | None, monthly_credits: int | None) -> subscriptions.TierPlan:
    plan = subscriptions.resolve_plan(tier, price, monthly_credits)
    if isinstance(plan, Refused):
        raise click.ClickException(str(plan))
    return plan


@click.command(name="subscribe")
@click.argument("user", type=click.UUID)
@click.option("--tier", required=True, help=TIER_HELP)
@click.option("--price", type=DECIMAL, default=None, help="USD a month. " + PLAN_HELP)
@click.option("--credits", "monthly_credits", type=int, default=None, help="Credits a month.")
@click.pass_obj
def subscribe_command(
    settings: Settings, user: UUID, tier: str, price: Decimal | None, monthly_credits: int | None
) -> None:
    """Subscribe USER to a monthly plan and grant its first month's credits."""
    plan = _plan(tier, price, monthly_credits)
    with connect(settings) as conn:
        result = subscriptions.subscribe(conn, user, plan, datetime.now(UTC))
    if isinstance(result, Refused):
        raise click.ClickException(f"refused: {result}")
    click.echo(
        f"subscription {result.subscription_id}: {plan.tier} USD {plan.price_usd}, "
        f"{plan.monthly_credits} credits until {result.period_end.isoformat()}; "
        f"balance {result.balance_before} -> {result.balance_after}"
    )


@click.command(name="upgrade")
@click.argument("subscription_id", type=click.UUID)
@click.option("--to", "tier", required=True, help=TIER_HELP)
@click.option("--price", type=DECIMAL, default=None, help="USD a month. " + PLAN_HELP)
@click.option("--credits", "monthly_credits", type=int, default=None, help="Credits a month.")
@click.pass_obj
def upgrade_command(
    settings: Settings,
    subscription_id: UUID,
    tier: str,
    price: Decimal | None,
    monthly_credits: int | None,
) -> None:
    """Upgrade SUBSCRIPTION_ID now: prorated charge and prorated credits."""
    plan = _plan(tier, price, monthly_credits)
    with connect(settings) as conn:
        result = subscriptions.upgrade(conn, subscription_id, plan, datetime.now(UTC))
    if isinstance(result, Refused):
        raise click.ClickException(f"refused: {result}")
    p = result.proration
    if not result.applied:
        click.echo(f"already upgraded to {p.to_tier} (proration {result.proration_event_id})")
        return
    click.echo(
        f"upgraded {p.from_tier} -> {p.to_tier}: {p.days_remaining}/{p.days_in_cycle} days, "
        f"unused USD {p.unused_value_usd}, new USD {p.new_cost_usd}, net charge USD "
        f"{p.net_charge_usd}; {p.credits} credits, "
        f"balance {result.balance_before} -> {result.balance_after}"
    )


@click.command(name="redeem")
@click.argument("user", type=click.UUID)
@click.argument("code")
@click.pass_obj
def redeem_command(settings: Settings, user: UUID, code: str) -> None:
    """Redeem credits coupon CODE for USER."""
    with connect(settings) as conn:
        result = coupons.redeem(conn, user, code, datetime.now(UTC), settings.usd_per_credit)
    if isinstance(result, Refused):
        raise click.ClickException(f"refused: {result}")
    expiry = result.expires_at.isoformat() if result.expires_at else "never"
    click.echo(
        f"redeemed {code}: {result.credits} credits (expire {expiry}); "
        f"balance {result.balance_before} -> {result.balance_after}"
    )


COMMANDS = (subscribe_command, upgrade_command, redeem_command)
