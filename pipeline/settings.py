"""Every setting of the pipeline, read once from the environment at the entry point.

Nothing below the entry point reads ``os.environ``: build a ``Settings`` in the CLI (or a
test) and pass it down. The servers' addresses are settings too: when the environment does
not name them, `from_environment` takes them from the local stack's ``stack.env``, which
`usage-pipeline dev up` writes into the state directory (and `dev down` removes).
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.errors import PipelineError
from pipeline.gateways.litellm import BilledUser, UserSource

STACK_ENV = "stack.env"
"""The local stack's DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS, in the state directory."""


class Settings(BaseSettings):
    """Pipeline settings; each field names its environment variable."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_prefix="")

    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    """DATABASE_URL: PostgreSQL conninfo; unset means the embedded server of `dev up`."""

    worker_database_url: str | None = Field(default=None, validation_alias="WORKER_DATABASE_URL")
    """WORKER_DATABASE_URL: the worker's own login (`db grant-login NAME --role
    pipeline_writer`), so the ledgers' privileges bind it; unset means DATABASE_URL."""

    kafka_bootstrap_servers: str | None = Field(
        default=None, validation_alias="KAFKA_BOOTSTRAP_SERVERS"
    )
    """KAFKA_BOOTSTRAP_SERVERS: host:port list; unset means the broker of `dev up`."""

    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", validation_alias="KAFKA_SECURITY_PROTOCOL"
    )
    """KAFKA_SECURITY_PROTOCOL: PLAINTEXT, SSL (TLS, mutual with a client certificate),
    SASL_PLAINTEXT or SASL_SSL (a managed Kafka: SCRAM or PLAIN over TLS)."""

    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        default="PLAIN", validation_alias="KAFKA_SASL_MECHANISM"
    )
    """KAFKA_SASL_MECHANISM: how a SASL_* protocol authenticates."""

    kafka_sasl_username: str | None = Field(default=None, validation_alias="KAFKA_SASL_USERNAME")
    """KAFKA_SASL_USERNAME: the SASL user (SASL_* protocols)."""

    kafka_sasl_password: SecretStr | None = Field(
        default=None, validation_alias="KAFKA_SASL_PASSWORD"
    )
    """KAFKA_SASL_PASSWORD: the SASL user's password, a secret: shown nowhere."""

    kafka_ssl_cafile: Path | None = Field(default=None, validation_alias="KAFKA_SSL_CAFILE")
    """KAFKA_SSL_CAFILE: PEM of the CA that signed the brokers' certificates (unset: the
    system's CAs)."""

    kafka_ssl_certfile: Path | None = Field(default=None, validation_alias="KAFKA_SSL_CERTFILE")
    """KAFKA_SSL_CERTFILE: PEM of this client's certificate chain, for mutual TLS."""

    kafka_ssl_keyfile: Path | None = Field(default=None, validation_alias="KAFKA_SSL_KEYFILE")
    """KAFKA_SSL_KEYFILE: PEM of this client's private key (unless KAFKA_SSL_CERTFILE holds it)."""

    usage_topic: str = Field(default="usage.events", validation_alias="USAGE_TOPIC")
    """USAGE_TOPIC: where gateways publish usage events."""

    dlq_topic: str = Field(default="usage.events.dlq", validation_alias="DLQ_TOPIC")
    """DLQ_TOPIC: rejected events with their reason and original bytes."""

    alerts_topic: str = Field(default="credit.alerts", validation_alias="ALERTS_TOPIC")
    """ALERTS_TOPIC: low / exhausted balance alerts for gateways."""

    topic_partitions: int = Field(default=4, ge=1, validation_alias="TOPIC_PARTITIONS")
    """TOPIC_PARTITIONS: partitions of the usage topic when the pipeline creates it."""

    topic_replication_factor: int = Field(
        default=-1, ge=-1, validation_alias="TOPIC_REPLICATION_FACTOR"
    )
    """TOPIC_REPLICATION_FACTOR: replicas of every topic the pipeline creates (the usage
    topic, the DLQ, the alerts, Faust's own); -1 takes the brokers' default.replication.factor."""

    usd_per_credit: Decimal = Field(
        default=Decimal("0.001"), gt=0, validation_alias="USD_PER_CREDIT"
    )
    """USD_PER_CREDIT: the USD value of one credit."""

    low_balance_credits: int = Field(default=1000, ge=0, validation_alias="LOW_BALANCE_CREDITS")
    """LOW_BALANCE_CREDITS: the low-water mark; crossing below it publishes an alert."""

    max_future_skew_seconds: int = Field(
        default=300, ge=0, validation_alias="MAX_FUTURE_SKEW_SECONDS"
    )
    """MAX_FUTURE_SKEW_SECONDS: how far in the future `started_at` may lie."""

    batch_max_events: int = Field(default=8000, ge=1, validation_alias="BATCH_MAX_EVENTS")
    """BATCH_MAX_EVENTS: most records in one take, and most events committed in one
    database transaction. Only a backlog fills a take (BATCH_MAX_WAIT_MS ends it first at
    a steady rate), and a larger one then spreads each transaction's fixed work (the
    locks, the lookups, one summary row per user and day) over more events: 8,000 against
    2,000 cut the booking stages' SQL 25-30% per event and the batch-record drain's worker
    and PostgreSQL CPU 10-20% (docs/benchmarks.md)."""

    booking_lanes: int = Field(default=2, ge=1, validation_alias="BOOKING_LANES")
    """BOOKING_LANES: transactions one worker keeps in flight, each over its own
    partitions of a take of batch records: while one waits on PostgreSQL the next is
    decoded and planned (2: batch-record drain +24%; see docs/benchmarks.md)."""

    stream_buffer_records: int = Field(
        default=16_384, ge=1, validation_alias="STREAM_BUFFER_RECORDS"
    )
    """STREAM_BUFFER_RECORDS: records the worker buffers ahead of its takes. It bounds the
    worker's memory: about this many times the size of a record (single events: ~6 MiB;
    full 500-event batch records of ~200 KB: ~3 GiB, so lower it for those), beside the
    take being gathered and the backlog waiting to be booked (at most BATCH_MAX_EVENTS
    records or KiB, see `usage_agent.Backlog`)."""

    batch_max_wait_ms: int = Field(default=20, ge=1, validation_alias="BATCH_MAX_WAIT_MS")
    """BATCH_MAX_WAIT_MS: longest wait to fill a take before booking it (20 ms: p99 at
    1,000 events/s offered 289 -> 120 ms against 50 ms, drain within noise)."""

    event_loop: Literal["uvloop", "asyncio"] = Field(
        default="uvloop", validation_alias="EVENT_LOOP"
    )
    """EVENT_LOOP: the asyncio event loop of the worker and the API: uvloop (libuv, the loop
    Faust and mode support besides asyncio's own; see docs/benchmarks.md) or asyncio."""

    litellm_user_source: str = Field(
        default="user_api_key_user_id", validation_alias="LITELLM_USER_SOURCE"
    )
    """LITELLM_USER_SOURCE: which id of a LiteLLM payload bills: `user_api_key_user_id` (the
    virtual key's user), `user_api_key_team_id`, `end_user` (the request's `user`) or
    `tag:<prefix>` (a request tag `<prefix><id>`); linked to our users with
    `usage-pipeline gateway-users link litellm ID USER`."""

    litellm_spool_path: Path = Field(
        default=Path(".state/litellm-spool.ndjson"), validation_alias="LITELLM_SPOOL_PATH"
    )
    """LITELLM_SPOOL_PATH: where the LiteLLM callback keeps the calls Kafka has not taken
    yet (an append-only file, replayed once the broker is back)."""

    litellm_buffer_events: int = Field(
        default=10_000, ge=1, validation_alias="LITELLM_BUFFER_EVENTS"
    )
    """LITELLM_BUFFER_EVENTS: calls the LiteLLM callback queues in memory; beyond, to the spool."""

    live_usage_view: bool = Field(default=True, validation_alias="LIVE_USAGE_VIEW")
    """LIVE_USAGE_VIEW: serve /users/{id}/usage/today from a Faust windowed table."""

    live_usage_flush_seconds: float = Field(
        default=5.0, gt=0, validation_alias="LIVE_USAGE_FLUSH_SECONDS"
    )
    """LIVE_USAGE_FLUSH_SECONDS: about how long booked usage waits before it is written into
    the view's table (its changelog), one write per user and day per interval, paced; the
    owning worker's answers include what is not written yet, a kill -9 loses about this
    much of the view."""

    expiry_interval_seconds: float = Field(
        default=60.0, gt=0, validation_alias="EXPIRY_INTERVAL_SECONDS"
    )
    """EXPIRY_INTERVAL_SECONDS: how often each worker expires credit sources (concurrent runs
    are safe: each user's sources are expired under the user's balance lock, once)."""

    state_dir: Path = Field(default=Path(".state"), validation_alias="USAGE_PIPELINE_STATE_DIR")
    """USAGE_PIPELINE_STATE_DIR: data, logs and pid files of the local stack."""

    worker_web_bind: str = Field(default="127.0.0.1", validation_alias="WORKER_WEB_BIND")
    """WORKER_WEB_BIND: the address the worker's web server listens on (loopback by default)."""

    worker_web_port: int = Field(default=6066, ge=0, validation_alias="WORKER_WEB_PORT")
    """WORKER_WEB_PORT: the worker's web server (/metrics, live usage views)."""

    broker_session_timeout: float = Field(
        default=10.0, gt=0, validation_alias="BROKER_SESSION_TIMEOUT"
    )
    """BROKER_SESSION_TIMEOUT: seconds before the group gives a silent worker's partitions
    to another (Faust's setting of that name, whose default 60 s kept a worker restarted
    after kill -9 idle for a minute); 3 heartbeats or more."""

    worker_instance_id: str | None = Field(default=None, validation_alias="WORKER_INSTANCE_ID")
    """WORKER_INSTANCE_ID: this worker's static member id in the group (Kafka's
    group.instance.id, KIP-345): restarted with the same id, it takes its partitions back
    without waiting for the old session to expire (1.9 s against 10 s, tests/integration/
    test_restart.py). Unique per worker, and the worker's web address (host name,
    WORKER_WEB_PORT) must stay the same across restarts: Faust checks it against the
    assignment the group kept and stalls on a mismatch. Unset, a restart waits for
    BROKER_SESSION_TIMEOUT."""

    broker_heartbeat_interval: float = Field(
        default=3.0, gt=0, validation_alias="BROKER_HEARTBEAT_INTERVAL"
    )
    """BROKER_HEARTBEAT_INTERVAL: seconds between a worker's heartbeats to the group."""

    worker_id: str = Field(default="usage-pipeline", validation_alias="WORKER_ID")
    """WORKER_ID: the Faust app id, which is also the Kafka consumer group."""

    api_bind: str = Field(default="127.0.0.1", validation_alias="API_BIND")
    """API_BIND: the address `usage-pipeline api` listens on (loopback by default)."""

    api_port: int = Field(default=8080, ge=0, le=65535, validation_alias="API_PORT")
    """API_PORT: the gateway API's port."""

    api_database_url: str | None = Field(default=None, validation_alias="API_DATABASE_URL")
    """API_DATABASE_URL: the API's own login (`db grant-login NAME --role api_reader`:
    reads balances, usage and keys, writes nothing); unset means DATABASE_URL."""

    api_db_pool_size: int = Field(
        default_factory=lambda: 2 * (os.cpu_count() or 1) + 1,
        ge=1,
        validation_alias="API_DB_POOL_SIZE",
    )
    """API_DB_POOL_SIZE: the API's PostgreSQL connections, by the seed's formula
    2 x cores + spindles (one disk) unless set."""

    api_max_events: int = Field(default=1000, ge=1, validation_alias="API_MAX_EVENTS")
    """API_MAX_EVENTS: most events in one POST /v1/events (more: 413)."""

    api_max_body_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, validation_alias="API_MAX_BODY_BYTES"
    )
    """API_MAX_BODY_BYTES: largest request body (more: 413)."""

    api_publish_timeout_seconds: float = Field(
        default=10.0, gt=0, validation_alias="API_PUBLISH_TIMEOUT_SECONDS"
    )
    """API_PUBLISH_TIMEOUT_SECONDS: how long an ingest waits for the broker's acks before it
    answers 503 with what was published."""

    log_format: Literal["text", "json"] = Field(default="text", validation_alias="LOG_FORMAT")
    """LOG_FORMAT: `text` (Faust's default) or `json`, one object per line with event context."""

    @model_validator(mode="after")
    def _settings_fit_together(self) -> Settings:
        if self.topic_replication_factor == 0:
            raise ValueError("TOPIC_REPLICATION_FACTOR is 0: give -1 (the brokers' default) or 1+")
        if self.broker_heartbeat_interval * 3 > self.broker_session_timeout:
            raise ValueError(
                f"BROKER_HEARTBEAT_INTERVAL={self.broker_heartbeat_interval:g} is more than a "
                f"third of BROKER_SESSION_TIMEOUT={self.broker_session_timeout:g} (Kafka's rule)"
            )
        protocol = self.kafka_security_protocol
        sasl = protocol.startswith("SASL_")
        if sasl and (self.kafka_sasl_username is None or self.kafka_sasl_password is None):
            raise ValueError(
                f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_USERNAME and "
                "KAFKA_SASL_PASSWORD"
            )
        if not sasl and self.kafka_sasl_username is not None:
            raise ValueError(
                f"KAFKA_SASL_USERNAME is set but KAFKA_SECURITY_PROTOCOL={protocol} is no SASL_*"
            )
        tls_files = {
            "KAFKA_SSL_CAFILE": self.kafka_ssl_cafile,
            "KAFKA_SSL_CERTFILE": self.kafka_ssl_certfile,
            "KAFKA_SSL_KEYFILE": self.kafka_ssl_keyfile,
        }
        given = [name for name, path in tls_files.items() if path is not None]
        if given and not protocol.endswith("SSL"):
            raise ValueError(f"{given[0]} is set but KAFKA_SECURITY_PROTOCOL={protocol} has no TLS")
        if self.kafka_ssl_keyfile is not None and self.kafka_ssl_certfile is None:
            raise ValueError("KAFKA_SSL_KEYFILE is set without KAFKA_SSL_CERTFILE")
        try:
            BilledUser.parse(self.litellm_user_source)
        except ValueError:
            raise ValueError(
                f"LITELLM_USER_SOURCE={self.litellm_user_source!r}: give one of "
                f"{', '.join(s.value for s in UserSource if s is not UserSource.TAG)} "
                "or tag:<prefix>"
            ) from None
        return self

    @property
    def litellm_billed_user(self) -> BilledUser:
        return BilledUser.parse(self.litellm_user_source)


class AddressMissing(PipelineError):
    """A server's address is set neither in the environment nor by a running local stack."""


def from_environment() -> Settings:
    """The settings of this process: its environment first, then the local stack's
    addresses (``<USAGE_PIPELINE_STATE_DIR>/stack.env``) for what the environment leaves unset."""
    return Settings(_env_file=Settings().state_dir / STACK_ENV)  # type: ignore[call-arg]


def database_url(settings: Settings) -> str:
    """DATABASE_URL, or a one-line AddressMissing that says how to get one."""
    if settings.database_url is None:
        raise AddressMissing(
            "DATABASE_URL is not set and no local stack is up: set it, "
            "or start one with `usage-pipeline dev up`"
        )
    return settings.database_url


def kafka_bootstrap(settings: Settings) -> str:
    """KAFKA_BOOTSTRAP_SERVERS, or a one-line AddressMissing that says how to get one."""
    if settings.kafka_bootstrap_servers is None:
        raise AddressMissing(
            "KAFKA_BOOTSTRAP_SERVERS is not set and no local stack is up: set it, "
            "or start one with `usage-pipeline dev up`"
        )
    return settings.kafka_bootstrap_servers
