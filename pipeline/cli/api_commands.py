"""`usage-pipeline api` (serve the gateway API) and `usage-pipeline api-keys` (its keys)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import click
import psycopg

from pipeline import tables
from pipeline.api import keys
from pipeline.cli.addresses import database_unusable, database_url, kafka_access
from pipeline.errors import PipelineError
from pipeline.settings import Settings


@click.command(name="api")
@click.option("--print-openapi", is_flag=True, help="Print the OpenAPI document and exit.")
@click.pass_obj
def api_command(settings: Settings, print_openapi: bool) -> None:
    """Serve the gateway API on API_BIND:API_PORT: POST /v1/events, GET /v1/users/{id}/
    balance|entitlement|usage, /healthz, /readyz, /metrics, /openapi.json.

    Connects to PostgreSQL as API_DATABASE_URL (else DATABASE_URL) with API_DB_POOL_SIZE
    connections, and publishes to USAGE_TOPIC.
    """
    from aiohttp import web

    from pipeline.api import openapi, service
    from pipeline.stream import event_loop

    if print_openapi:
        click.echo(openapi.rendered(), nl=False)
        return
    kafka = kafka_access(settings)
    setting = "API_DATABASE_URL" if settings.api_database_url else "DATABASE_URL"
    url = settings.api_database_url or database_url(settings)
    try:  # one line now rather than a pool that retries in silence
        psycopg.connect(url, connect_timeout=10).close()
    except psycopg.OperationalError as exc:
        raise click.ClickException(database_unusable(setting, url, exc)) from None
    event_loop.use(settings)
    app = service.create_api(settings, url, kafka)
    click.echo(f"api: listening on http://{settings.api_bind}:{settings.api_port}", err=True)
    web.run_app(app, host=settings.api_bind, port=settings.api_port, access_log=None,
                print=None, shutdown_timeout=5)  # fmt: skip


@click.group(name="api-keys")
def api_keys() -> None:
    """Make, list and revoke the gateway API's keys (as the database owner)."""


def _owner(settings: Settings) -> psycopg.Connection[Any]:
    return psycopg.connect(database_url(settings))


@api_keys.command()
@click.argument("name")
@click.option(
    "--scope",
    required=True,
    type=click.Choice([s.value for s in keys.Scope]),
    help="ingest: POST /v1/events; read: balances, entitlements, usage; admin: all.",
)
@click.option(
    "--user",
    "users",
    multiple=True,
    type=click.UUID,
    help="Restrict the key to this user (repeat for more); default every user.",
)
@click.pass_obj
def create(settings: Settings, name: str, scope: str, users: tuple[uuid.UUID, ...]) -> None:
    """Make key NAME and print its token once: only its SHA-256 is kept."""  # fmt: skip
    with _owner(settings) as conn:
        try:
            key, token = keys.create(conn, name, keys.Scope(scope), users)
        except PipelineError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"key {key.name} ({key.scope}, {_whose(key)}) made; its token, shown once:",
               err=True)  # fmt: skip
    click.echo(token)


def _whose(key: keys.ApiKey) -> str:
    return "every user" if key.users is None else f"{len(key.users)} users"


def _when(at: datetime | None) -> str:
    return at.isoformat(timespec="seconds") if at is not None else ""


@api_keys.command(name="list")
@click.pass_obj
def list_keys(settings: Settings) -> None:
    """The keys, by prefix (tokens are not kept)."""
    with _owner(settings) as conn:
        found = keys.listed(conn)
    rows = [
        [k.name, k.prefix + "...", k.scope.value, _whose(k), _when(k.created_at),
         _when(k.revoked_at)]
        for k in found
    ]  # fmt: skip
    columns = ("name", "prefix", "scope", "users", "created", "revoked")
    click.echo(tables.text(columns, rows) if rows else "no API keys")


@api_keys.command()
@click.argument("name")
@click.pass_obj
def revoke(settings: Settings, name: str) -> None:
    """Revoke key NAME: the API refuses it within a few seconds."""
    with _owner(settings) as conn:
        try:
            key = keys.revoke(conn, name)
        except PipelineError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"key {key.name} revoked")
