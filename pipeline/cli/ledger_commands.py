"""`usage-pipeline reconcile` and `usage-pipeline credits grant`."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import click
import psycopg

from pipeline.cli.addresses import database_url
from pipeline.money.credits import CREDIT_TYPES, Grant, grant
from pipeline.money.reconcile import reconcile
from pipeline.settings import Settings


@click.command(name="reconcile")
@click.option("--user", "user", type=click.UUID, default=None, help="Check one user only.")
@click.pass_obj
def reconcile_command(settings: Settings, user: UUID | None) -> None:
    """Check every invariant of the books; exit 1 and list violations if any."""
    db_url = database_url(settings)
    with psycopg.connect(db_url) as conn:
        violations = reconcile(conn, user)
    for violation in violations:
        click.echo(str(violation))
    if violations:
        raise SystemExit(1)
    click.echo("books reconcile: every invariant holds")


@click.group()
def credits() -> None:
    """Money movements other than usage."""


@credits.command(name="grant")
@click.argument("user", type=click.UUID)
@click.argument("amount", type=click.IntRange(min=1))
@click.option("--type", "credit_type", type=click.Choice(CREDIT_TYPES), required=True)
@click.option("--expires-at", type=click.DateTime(), default=None, help="UTC expiry time.")
@click.option("--idempotency-key", default=None, help="A retried grant with it applies once.")
@click.pass_obj
def grant_command(
    settings: Settings,
    user: UUID,
    amount: int,
    credit_type: str,
    expires_at: datetime | None,
    idempotency_key: str | None,
) -> None:
    """Grant AMOUNT credits to USER."""
    db_url = database_url(settings)
    expiry = expires_at.replace(tzinfo=UTC) if expires_at else None
    try:
        with psycopg.connect(db_url) as conn:
            result = grant(conn, Grant(user, amount, credit_type, expiry, idempotency_key))
    except psycopg.errors.ForeignKeyViolation:
        raise click.ClickException(f"no user {user}") from None
    verb = "granted" if result.applied else "already granted (idempotency key seen)"
    click.echo(f"{verb}: balance {result.balance_before} -> {result.balance_after}")
