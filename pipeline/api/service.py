"""The gateway API as an aiohttp application: routes, middlewares, and its two clients (a
PostgreSQL pool sized by API_DB_POOL_SIZE and one idempotent Kafka producer).

Handlers are thin: they parse, call `accounts` or `ingest`, and answer JSON; every error
is a `Problem` answered as problem+json by `problems_middleware`. A connection is taken
from the pool for one query and given back before the answer is written, so a slow client
never holds one.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST as METRICS_CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from pipeline.api import accounts, auth, ingest, openapi
from pipeline.api.auth import KEY, KeyCache
from pipeline.api.problems import Problem, from_http, respond
from pipeline.core.events import Decoded, UsageEvent
from pipeline.settings import Settings
from pipeline.stream import heap
from pipeline.stream.kafka_access import KafkaAccess

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = "5"
MAX_USAGE_DAYS = 366
POOL_WAIT_SECONDS = 5.0

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", AsyncConnectionPool)
PUBLISHER = web.AppKey("publisher", ingest.Publisher)


class ApiMetrics:
    """Requests by route (its template: no user id in a label) and status, their latency,
    and the database connections in use (now and at most)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("usage_api_requests", "API requests answered",
                                ["route", "method", "status"], registry=self.registry)  # fmt: skip
        self.latency = Histogram(
            "usage_api_request_seconds", "Time to answer an API request", ["route", "method"],
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=self.registry,
        )  # fmt: skip
        self.in_use = 0
        self.max_in_use = 0
        Gauge("usage_api_db_connections_in_use", "Pool connections in use", registry=self.registry
              ).set_function(lambda: self.in_use)  # fmt: skip
        Gauge("usage_api_db_connections_max_in_use", "Most pool connections in use at once",
              registry=self.registry).set_function(lambda: self.max_in_use)  # fmt: skip


METRICS = web.AppKey("metrics", ApiMetrics)
ACCOUNTS = web.AppKey("accounts", accounts.AccountReader)


@contextlib.asynccontextmanager
async def connection(app: web.Application) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A pool connection for one query; a database that is away is a 503."""
    metrics = app[METRICS]
    try:
        async with app[POOL].connection(timeout=POOL_WAIT_SECONDS) as conn:
            metrics.in_use += 1
            metrics.max_in_use = max(metrics.max_in_use, metrics.in_use)
            try:
                yield conn
            finally:
                metrics.in_use -= 1
    except (PoolTimeout, psycopg.OperationalError) as exc:
        raise Problem("unavailable", f"PostgreSQL: {type(exc).__name__}",
                      {"Retry-After": RETRY_AFTER_SECONDS}) from None  # fmt: skip


# --- middlewares -------------------------------------------------------------------------


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def metrics_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    began = time.perf_counter()
    response: web.StreamResponse = await handler(request)
    metrics, route = request.app[METRICS], _route(request)
    metrics.latency.labels(route, request.method).observe(time.perf_counter() - began)
    metrics.requests.labels(route, request.method, str(response.status)).inc()
    return response


@web.middleware
async def problems_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except Problem as problem:
        return respond(problem, request.path)
    except web.HTTPException as exc:
        refusal = from_http(exc)
        if refusal is None:
            raise
        return respond(refusal, request.path)
    except Exception:
        log.exception("%s %s failed", request.method, _route(request))
        return respond(Problem("internal", "an unexpected error; see the API's log"), request.path)


# --- parameters --------------------------------------------------------------------------


def _user(request: web.Request) -> UUID:
    try:
        user = UUID(request.match_info["user_id"])
    except ValueError:
        raise Problem("bad-request", "user_id must be a UUID") from None
    if not request[KEY].may_see(user):
        raise Problem("forbidden", f"key {request[KEY].name} may not see this user")
    return user


def _date(request: web.Request, name: str) -> date:
    try:
        return date.fromisoformat(request.query[name])
    except KeyError:
        raise Problem("bad-request", f"query parameter {name} (YYYY-MM-DD) is required") from None
    except ValueError:
        raise Problem("bad-request", f"{name} must be a date, YYYY-MM-DD") from None


async def _account(request: web.Request, user: UUID) -> accounts.Account:
    found = await request.app[ACCOUNTS].account(user)
    if found is None:
        raise Problem("unknown-user", f"no user {user}")
    return found


# --- handlers ----------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    down = []
    try:
        async with connection(request.app) as conn:
            await conn.execute("SELECT 1")
    except Problem:
        down.append("postgresql")
    if not await request.app[PUBLISHER].reachable():
        down.append("kafka")
    if down:
        raise Problem("unavailable", f"not reachable: {', '.join(down)}",
                      {"Retry-After": RETRY_AFTER_SECONDS}, unavailable=down)  # fmt: skip
    return web.json_response({"status": "ready"})


async def metrics_page(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(openapi.document())


async def post_events(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    items = ingest.split_body(content_type, await request.read(), settings.api_max_events)
    skew = timedelta(seconds=settings.max_future_skew_seconds)
    verdicts = ingest.judge(items, datetime.now(UTC), skew)
    foreign = ingest.foreign_users(verdicts, request[KEY].users)
    if foreign:
        raise Problem("forbidden", f"key {request[KEY].name} may not ingest for the users of "
                      f"events {foreign[:10]}", events=foreign)  # fmt: skip
    return await _publish(request, items, verdicts)


async def post_litellm(request: web.Request) -> web.Response:
    """LiteLLM's `generic_api` logger: its payloads mapped to events of LiteLLM's users,
    whom the worker books for the users linked to them."""
    settings, key = request.app[SETTINGS], request[KEY]
    if key.users is not None:
        raise Problem("forbidden", f"key {key.name} is restricted to users; LiteLLM's payloads "
                      "name LiteLLM's users, which only the worker links to ours")  # fmt: skip
    payloads = ingest.litellm_payloads(await request.read(), settings.api_max_events)
    skew = timedelta(seconds=settings.max_future_skew_seconds)
    items, verdicts = ingest.judge_litellm(
        payloads, settings.litellm_billed_user, datetime.now(UTC), skew
    )
    return await _publish(request, items, verdicts)


async def _publish(
    request: web.Request, items: list[bytes], verdicts: list[Decoded]
) -> web.Response:
    """Publish the accepted events and answer per event (202), or 503 if Kafka did not
    take them all."""
    publisher = request.app[PUBLISHER]
    accepted = {i for i, v in enumerate(verdicts) if isinstance(v, UsageEvent)}
    try:
        planned = (
            ingest.plan(items, verdicts, await publisher.partition_count()) if accepted else []
        )
        unpublished = await publisher.send(planned) if planned else set()
    except ingest.BrokerUnavailable as exc:
        log.warning("ingest: Kafka unavailable: %s", exc)
        unpublished = accepted
    answers = ingest.results(verdicts, unpublished)
    counts = {"accepted": len(accepted) - len(unpublished), "rejected": len(items) - len(accepted)}
    if unpublished:
        raise Problem(
            "unavailable",
            f"Kafka did not acknowledge {len(unpublished)} accepted events; send those again",
            {"Retry-After": RETRY_AFTER_SECONDS},
            **counts, not_published=len(unpublished), results=answers,
        )  # fmt: skip
    return web.json_response({**counts, "results": answers}, status=202)


async def get_balance(request: web.Request) -> web.Response:
    found = await _account(request, _user(request))
    return web.json_response(
        accounts.balance_answer(found, request.app[SETTINGS].low_balance_credits)
    )


async def get_entitlement(request: web.Request) -> web.Response:
    user = _user(request)
    try:
        credits = int(request.query["credits"])
    except (KeyError, ValueError):
        raise Problem(
            "bad-request", "query parameter credits (an integer >= 0) is required"
        ) from None
    if credits < 0:
        raise Problem("bad-request", "credits must be >= 0")
    found = await _account(request, user)
    low_water = request.app[SETTINGS].low_balance_credits
    return web.json_response(accounts.entitlement_answer(found, credits, low_water))


async def get_usage(request: web.Request) -> web.Response:
    user = _user(request)
    start, end = _date(request, "from"), _date(request, "to")
    if end < start or (end - start).days >= MAX_USAGE_DAYS:
        raise Problem("bad-request", f"from..to must be 1 to {MAX_USAGE_DAYS} days, in order")
    await _account(request, user)
    async with connection(request.app) as conn:
        days = await accounts.usage(conn, user, start, end)
    return web.json_response({"user_id": str(user), "from": start.isoformat(),
                              "to": end.isoformat(), "days": days})  # fmt: skip


ROUTES = [
    ("GET", "/healthz", healthz),
    ("GET", "/readyz", readyz),
    ("GET", "/metrics", metrics_page),
    ("GET", "/openapi.json", openapi_document),
    ("POST", "/v1/events", post_events),
    ("POST", "/v1/ingest/litellm", post_litellm),
    ("GET", "/v1/users/{user_id}/balance", get_balance),
    ("GET", "/v1/users/{user_id}/entitlement", get_entitlement),
    ("GET", "/v1/users/{user_id}/usage", get_usage),
]


def create_api(settings: Settings, database_url: str, kafka: KafkaAccess) -> web.Application:
    # Autocommit: a read is one statement, so one round trip (no BEGIN before it, no
    # COMMIT when the connection goes back), and the connection returns sooner.
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        database_url, open=False, min_size=settings.api_db_pool_size,
        max_size=settings.api_db_pool_size, timeout=POOL_WAIT_SECONDS,
        kwargs={"autocommit": True},
    )  # fmt: skip
    publisher = ingest.Publisher(
        kafka, settings.usage_topic, settings.topic_partitions,
        settings.topic_replication_factor, settings.api_publish_timeout_seconds,
    )  # fmt: skip
    app = web.Application(
        client_max_size=settings.api_max_body_bytes,
        middlewares=[metrics_middleware, problems_middleware, auth.middleware(KeyCache(pool))],
    )
    app[SETTINGS], app[POOL], app[PUBLISHER], app[METRICS] = settings, pool, publisher, ApiMetrics()

    async def read_accounts(users: Sequence[UUID]) -> dict[UUID, accounts.Account]:
        async with connection(app) as conn:
            return await accounts.accounts(conn, users)

    app[ACCOUNTS] = accounts.AccountReader(read_accounts, settings.api_db_pool_size)
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)

    async def clients(app: web.Application) -> AsyncIterator[None]:
        await pool.open(wait=False)
        heap.spare_startup_heap()  # as the worker does: no full-heap collections mid-request
        yield
        await publisher.close()
        await pool.close()

    app.cleanup_ctx.append(clients)
    return app
