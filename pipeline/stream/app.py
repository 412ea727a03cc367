"""The Faust app, assembled from settings: its topics, the connection pool, the booker,
`/metrics`, then the usage agent (`usage_agent`) and the timers (`timers`) installed on it.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import faust
from psycopg_pool import AsyncConnectionPool

from pipeline.settings import Settings
from pipeline.stream import kafka_io, logs, refetch, timers, usage_agent
from pipeline.stream.booker import Booker, BookingConfig
from pipeline.stream.kafka_access import KafkaAccess, faust_credentials
from pipeline.stream.live_view import CHANGELOG_CONFIG, changelog_topic, install_live_view
from pipeline.stream.metrics import CONTENT_TYPE, new_metrics

FETCH_BYTES_PER_PARTITION = 8 * 1024 * 1024
METADATA_MAX_AGE_MS = 10_000

log = logging.getLogger(__name__)


async def resolve_replication(settings: Settings, kafka: KafkaAccess) -> Settings:
    """`settings` with TOPIC_REPLICATION_FACTOR=-1 made the brokers' default.replication.factor,
    which Faust needs as a number for its own topics. It asks a broker, so it also proves
    that one answers (KafkaConnectionError if none does)."""
    if settings.topic_replication_factor >= 1:
        await kafka_io.default_replication(kafka)
        return settings
    replication = await kafka_io.default_replication(kafka)
    return settings.model_copy(update={"topic_replication_factor": replication})


async def resolve_partitions(settings: Settings, kafka: KafkaAccess) -> Settings:
    """`settings` with TOPIC_PARTITIONS made the usage topic's partition count (the topic
    created with TOPIC_PARTITIONS if it is missing); with the view on, its changelog
    created with that count if missing, and the view off, logged, if the changelog has
    another count. TOPIC_REPLICATION_FACTOR must be resolved.

    The view writes a user's windows to the changelog partition of the usage partition the
    user's events arrive on, so the two must have as many partitions. Left to Faust, the
    changelog got TOPIC_PARTITIONS, or the brokers' num.partitions when a metadata request
    had them auto-create it first; a changelog with fewer partitions than the usage topic
    then took a write to a partition it lacks: aiokafka's "Unrecognized partition" crashed
    Faust's producer buffer and the worker (the LiteLLM test's worker, started before the
    usage topic existed: its consumer had it auto-created with 4 partitions, and Faust made
    the changelog with TOPIC_PARTITIONS=2). A changelog of another count cannot hold the
    view: the books go on without it rather than not at all."""
    replication = settings.topic_replication_factor
    topic = settings.usage_topic
    count = len(await kafka_io.ensure_topic(kafka, topic, settings.topic_partitions, replication))
    resolved = settings.model_copy(update={"topic_partitions": count})
    if not settings.live_usage_view:
        return resolved
    changelog = changelog_topic(settings.worker_id)
    found = await kafka_io.ensure_topic(kafka, changelog, count, replication, CHANGELOG_CONFIG)
    if len(found) == count:
        return resolved
    log.error(
        "the live usage view is off: its changelog topic %s does not have the %d partitions "
        "of %s; delete that topic to have the view again (it starts from what is booked next)",
        changelog,
        count,
        topic,
    )
    return resolved.model_copy(update={"live_usage_view": False})


def new_app(settings: Settings, kafka: KafkaAccess) -> tuple[faust.App, faust.TopicT]:
    """The Faust app with the worker's settings, and its usage topic (no agents yet).
    TOPIC_REPLICATION_FACTOR must be resolved (`resolve_replication`)."""
    replicas = settings.topic_replication_factor
    if replicas < 1:
        raise ValueError("TOPIC_REPLICATION_FACTOR=-1 must be resolved: see resolve_replication")
    app = faust.App(
        settings.worker_id,
        # Faust would read its own settings from the environment, and prefer them to these
        # (TOPIC_REPLICATION_FACTOR=-1 is ours, not a number Faust takes): every setting
        # is ours, read once (BROKER_SESSION_TIMEOUT too, under Faust's name).
        env={},
        broker=[f"kafka://{server.strip()}" for server in kafka.bootstrap.split(",")],
        broker_credentials=faust_credentials(kafka),
        datadir=str(settings.state_dir / "faust" / settings.worker_id),
        store="memory://",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=replicas,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        web_bind=settings.worker_web_bind,
        web_port=settings.worker_web_port,
        web_in_thread=False,
        stream_wait_empty=False,
        broker_session_timeout=settings.broker_session_timeout,
        broker_heartbeat_interval=settings.broker_heartbeat_interval,
        consumer_group_instance_id=settings.worker_instance_id,
        broker_commit_every=10_000,
        # No leader election topic: its one partition never holds a record, yet the consumer
        # fetches it with the usage partitions, and aiokafka leaves a partition out of a fetch
        # while records it fetched wait to be consumed (the loop is booking). A fetch of the
        # leader partition alone then waits Faust's fetch_max_wait_ms (1,500 ms, hard-coded)
        # at the broker, one fetch per broker at a time: the worker stalled 0.5-2.5 s every
        # 3-4 s under load (docs/benchmarks.md). Nothing needs a leader: credit expiry, the
        # one leader timer, is safe on every worker (`money.movements.expire`).
        topic_disable_leader=True,
        broker_commit_interval=1.0,
        # Faust's default 1 MiB per partition per fetch caps a worker near 4.7k events/s
        # here; 8 MiB lets the fetcher keep ahead of the books (docs/benchmarks.md).
        consumer_max_fetch_size=FETCH_BYTES_PER_PARTITION,
        # A worker that joins while the broker restarts can find the usage topic missing
        # from its metadata ("Ignoring missing topic") and then idles until the next
        # metadata refresh: aiokafka's default of 5 minutes stalled a chaos drill for 150 s.
        consumer_metadata_max_age_ms=METADATA_MAX_AGE_MS,
        stream_buffer_maxsize=settings.stream_buffer_records,
        logging_config=logs.logging_config(settings.log_format),
    )
    usage = app.topic(
        settings.usage_topic,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.topic_partitions,
        replicas=replicas,
    )
    return app, usage


def run(app: faust.App, loglevel: str) -> None:
    """Run `app` as a Faust worker until it stops (what `faust worker` does).

    Without Faust's terminal spinner: at WARN and above it sets the root logger to DEBUG
    and spins once per log record, so every debug call of Faust, mode and aiokafka (a few
    per record produced) would build a record and pass it to the handlers; at INFO and
    below Faust drops it itself.
    """
    from faust.worker import Worker

    worker = Worker(app, loglevel=loglevel)
    worker.spinner = None
    worker.execute_from_commandline()


def create_app(settings: Settings, database_url: str, kafka: KafkaAccess) -> faust.App:
    app, usage = new_app(settings, kafka)
    outputs = [
        app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            partitions=1,
            replicas=settings.topic_replication_factor,
        )
        for name in (settings.dlq_topic, settings.alerts_topic)
    ]
    live = (
        install_live_view(app, usage, settings.live_usage_flush_seconds)
        if settings.live_usage_view
        else None
    )
    # A connection per lane, one for the alert outbox and one spare.
    pool = AsyncConnectionPool(
        database_url, open=False, min_size=1, max_size=settings.booking_lanes + 2
    )

    async def send(topic: str, key: bytes | None, value: bytes, headers: list[Any]) -> None:
        await app.producer.send_and_wait(topic, key, value, None, None, headers)

    booker = Booker(
        pool,
        send,
        BookingConfig(
            dlq_topic=settings.dlq_topic,
            alerts_topic=settings.alerts_topic,
            usd_per_credit=settings.usd_per_credit,
            low_water=settings.low_balance_credits,
            max_future_skew=timedelta(seconds=settings.max_future_skew_seconds),
            consumer_group=settings.worker_id,
            max_events=settings.batch_max_events,
        ),
    )
    metrics = new_metrics()

    @app.page("/metrics")
    async def metrics_page(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return view.bytes(metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    activity = refetch.Activity()
    usage_agent.install(app, usage, outputs, booker, metrics, live, settings, activity)
    timers.install(app, usage, booker, metrics, database_url, settings)
    refetch.install(app, usage.get_topic_name(), pool, settings.worker_id, activity)
    return app
