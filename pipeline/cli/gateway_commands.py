"""`usage-pipeline gateway-users`: link a gateway's own users (LiteLLM's ids) to ours."""

from __future__ import annotations

import uuid

import click
import psycopg
from pydantic import ValidationError

from pipeline import tables
from pipeline.cli.addresses import database_url
from pipeline.core.events import GatewayUser, gateway_alias
from pipeline.errors import PipelineError
from pipeline.gateways import links
from pipeline.settings import Settings


@click.group(name="gateway-users")
def gateway_users() -> None:
    """Which of our users a gateway's user id bills (as the database owner)."""


def _named(gateway: str, external_id: str) -> GatewayUser:
    try:
        return GatewayUser(gateway=gateway, id=external_id)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise click.BadParameter(f"{first['loc'][0]}: {first['msg']}") from None


@gateway_users.command(name="link")
@click.argument("gateway")
@click.argument("external_id")
@click.argument("user", type=click.UUID)
@click.pass_obj
def link_command(settings: Settings, gateway: str, external_id: str, user: uuid.UUID) -> None:
    """Bill GATEWAY's user EXTERNAL_ID (e.g. litellm alice) to our user USER."""
    named = _named(gateway, external_id)
    with psycopg.connect(database_url(settings)) as conn:
        try:
            made = links.link(conn, named, user)
        except PipelineError as exc:
            raise click.ClickException(str(exc)) from None
    alias = gateway_alias(made.gateway, made.external_id)
    click.echo(f"{made.gateway} user {made.external_id!r} bills user {made.user_id} "
               f"(its events carry user_id {alias})")  # fmt: skip


@gateway_users.command(name="unlink")
@click.argument("gateway")
@click.argument("external_id")
@click.pass_obj
def unlink_command(settings: Settings, gateway: str, external_id: str) -> None:
    """Stop billing GATEWAY's user EXTERNAL_ID: its next events are dead-lettered."""
    named = _named(gateway, external_id)
    with psycopg.connect(database_url(settings)) as conn:
        try:
            gone = links.unlink(conn, named)
        except PipelineError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"{gone.gateway} user {gone.external_id!r} no longer bills user {gone.user_id}")


@gateway_users.command(name="list")
@click.option("--gateway", help="Only this gateway's users.")
@click.pass_obj
def list_command(settings: Settings, gateway: str | None) -> None:
    """The links, by gateway and id."""
    with psycopg.connect(database_url(settings)) as conn:
        found = links.listed(conn, gateway)
    rows = [[k.gateway, k.external_id, str(k.user_id), k.created_at.isoformat(timespec="seconds")]
            for k in found]  # fmt: skip
    click.echo(tables.text(("gateway", "id", "user", "linked"), rows) if rows else "no links")
