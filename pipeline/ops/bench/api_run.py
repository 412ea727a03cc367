"""One `bench api`: the bench's own stack and template (migrated, seeded, the price catalog,
the users with their credits: `bench_stack.prepare_template`, as `bench stream` makes it),
then per repeat, on a fresh copy of the template:

1. the API's own login (api_reader) and two keys made by the product (`keys.create`):
   read for the checks, ingest for the arrays;
2. one worker on a topic of its own, warmed up on a few hundred events, and one
   `usage-pipeline api` process publishing to that topic;
3. phase "checks": the load client's closed loop while this process publishes the
   background stream for the worker to book, then phase "ingest" at each offered rate,
   once the background is booked (`api_phases`);
4. the books: every event published (warm-up, background, each array answered 2xx) is
   booked exactly once (request_id is UNIQUE in the ledger, so as many rows of those ids
   as events means once each) and the dead-letter topic is empty; the pool's most
   connections in use from the API's /metrics.
"""

from __future__ import annotations

import asyncio
import subprocess
import urllib.request
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg

from pipeline.api import keys
from pipeline.money.catalog import load_litellm
from pipeline.ops import api_process
from pipeline.ops.bench import api_results, measure, runners, traffic
from pipeline.ops.bench.api_phases import Api, ApiBenchParams, Repeat
from pipeline.ops.bench.bench_stack import bench_stack, machine, prepare_template
from pipeline.ops.bench.publish import publish
from pipeline.ops.demo.sample import DemoUser
from pipeline.ops.devstack.ports import free_port
from pipeline.schema import logins
from pipeline.settings import Settings
from pipeline.stream import kafka_io
from pipeline.stream.kafka_access import KafkaAccess

WARMUP_EVENTS = 300
API_START_SECONDS = 60.0


def run_api_bench(
    settings: Settings,
    params: ApiBenchParams,
    base_env: Mapping[str, str],
    progress: Callable[[str], None],
) -> dict[str, Any]:
    prices = load_litellm(params.catalog)
    models = traffic.pick_models(prices.entries, params.seed)
    users = traffic.make_users(params.users)
    runs: list[dict[str, Any]] = []
    with bench_stack(settings, progress) as stack:
        imported = prepare_template(stack, params.catalog, users, datetime.now(UTC))
        progress(f"template: {len(imported.changes)} prices imported, {params.users:,} users")
        for n in range(params.repeat):
            progress(f"-- run {n + 1} of {params.repeat}")
            tag = f"r{n + 1}{runners.new_tag()}"
            ctx = runners.Context(stack, base_env, tag, params.deadline_seconds, 0, progress)
            runs.append({"repeat": n + 1} | _run(ctx, params, users, models, n))
        about = machine(stack)
    return {
        "version": 1,
        "machine": about,
        "params": params.as_dict()
        | {
            "topic_partitions": settings.topic_partitions,
            "api_db_pool_size": settings.api_db_pool_size,
        },
        "runs": runs,
        "summary": api_results.summarize(runs),
    }


def _start_api(ctx: runners.Context, database: str, topic: str) -> Api:
    """The API as its own api_reader login, with a read and an ingest key."""
    with psycopg.connect(database) as conn:
        api_url = logins.login_url(conn, database, logins.API_LOGIN, "api_reader")
        _, read = keys.create(conn, f"bench-read-{ctx.tag}", keys.Scope.READ)
        _, ingest = keys.create(conn, f"bench-ingest-{ctx.tag}", keys.Scope.INGEST)
    port = free_port()
    env = dict(
        ctx.base_env,
        DATABASE_URL=database,
        API_DATABASE_URL=api_url,
        KAFKA_BOOTSTRAP_SERVERS=ctx.stack.bootstrap,
        USAGE_TOPIC=topic,
        API_BIND="127.0.0.1",
        API_PORT=str(port),
        TOPIC_PARTITIONS=str(ctx.stack.settings.topic_partitions),
        USAGE_PIPELINE_STATE_DIR=str(ctx.stack.settings.state_dir / f"api-{ctx.tag}"),
    )
    log = ctx.stack.settings.state_dir / f"api-{ctx.tag}.log"
    process = api_process.start_api(env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        api_process.wait_answering(process, url, log, API_START_SECONDS, "/readyz")
    except api_process.ApiNotUp as exc:
        runners.stop(process)
        raise runners.BenchFailed(str(exc)) from None
    return Api(url, process, read, ingest)


def _run(
    ctx: runners.Context,
    params: ApiBenchParams,
    users: tuple[DemoUser, ...],
    models: tuple[traffic.BenchModel, ...],
    n: int,
) -> dict[str, Any]:
    database = ctx.stack.database(f"bench_api_{ctx.tag}")
    topic = f"bench.api.{ctx.tag}"
    bootstrap = ctx.stack.bootstrap
    partitions = ctx.stack.settings.topic_partitions
    asyncio.run(kafka_io.ensure_topic(KafkaAccess(bootstrap), topic, partitions))

    def make(count: int, index: int, **shares: float) -> traffic.Stream:
        seed = (params.seed + 1000 * (n + 1) + index) & 0xFFFFFFFF
        return traffic.generate(count, datetime.now(UTC), models, users, seed=seed,
                                malformed_share=0.0, **shares)  # fmt: skip

    worker = runners.start_worker(ctx, database, topic, f"bench-api-{ctx.tag}")
    api: Api | None = None
    try:
        warmup = make(WARMUP_EVENTS, 0)
        asyncio.run(publish(bootstrap, topic, warmup.lines, warmup.keys, None))
        runners.wait_rows(ctx, database, warmup.unique_valid, [worker], "the worker")
        api = _start_api(ctx, database, topic)
        repeat = Repeat(ctx, params, database, topic, make, worker, api, warmup.valid_ids(),
                         params.seed + n)  # fmt: skip
        series, background = repeat.checks(users)
        for index, rate in enumerate(params.ingest_rates):
            series += repeat.ingest(index, rate)
        books = _books(ctx, database, topic, repeat.expected, repeat.processes)
        ctx.progress(
            f"books: {books['booked']:,} of {books['expected']:,} events booked once, "
            f"{books['dead_letters']} dead letters"
        )
        pool = _scrape(api.url, api_results.POOL_METRIC)
    finally:
        if api is not None:
            runners.stop(api.process)
        runners.stop(worker)
    ctx.stack.drop(f"bench_api_{ctx.tag}")
    return {
        "series": series,
        "pool_max_in_use": pool,
        "pool_size": ctx.stack.settings.api_db_pool_size,
        "background": background,
        "books": books,
    }


def _books(
    ctx: runners.Context,
    database: str,
    topic: str,
    expected: set[UUID],
    processes: list[subprocess.Popen[bytes]],
) -> dict[str, Any]:
    """Wait (to the deadline) for the expected events, then count them and the DLQ."""
    failure = None
    try:
        runners.wait_rows(ctx, database, len(expected), processes, "the worker", expected)
    except runners.BenchFailed as exc:
        failure = str(exc)
        ctx.progress(f"books: {failure}")
    booked = measure.ledger_rows(database, expected)
    letters = asyncio.run(kafka_io.dead_letters(KafkaAccess(ctx.stack.bootstrap), f"{topic}.dlq"))
    return {
        "expected": len(expected),
        "booked": booked,
        "rows": measure.ledger_rows(database),
        "dead_letters": len(letters),
        "exact": booked == len(expected) and not letters,
        "failure": failure,
    }


def _scrape(url: str, name: str) -> float | None:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text: str = response.read().decode()
    return api_results.metric_value(text, name)
