"""Prometheus metrics of the worker: their definitions and how a booked batch updates them.

Every metric lives in a `CollectorRegistry` of its own (one per app, so tests and several
apps in one process never share counters). Labels never carry a user id or anything
personal: money is broken down by provider id and model only.

Prometheus samples are float64, so the money counters here are approximations for
dashboards; the books in PostgreSQL stay exact `NUMERIC`. Gross margin can be negative
(a margin multiplier below 1), which a counter cannot express: it is derived in PromQL
as ``usage_pipeline_billed_usd_total - usage_pipeline_vendor_cost_usd_total``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.process_collector import ProcessCollector

from pipeline.core.plan import OutcomeKind
from pipeline.core.pricing import VENDOR_COST_EXPONENT
from pipeline.stream.booker import BatchResult
from pipeline.stream.dlq import SourceMessage
from pipeline.stream.histogram import BatchHistogram

PREFIX = "usage_pipeline"
CONTENT_TYPE = CONTENT_TYPE_LATEST
OUTCOMES = tuple(OutcomeKind)
BOOKED_OUTCOMES = tuple(k for k in OutcomeKind if k.booked)
"""Outcomes that write one `token_usage_ledger` row."""

BATCH_SIZE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
COMMIT_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
LATENCY_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


class Metrics:
    """The worker's metrics, registered in `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

        def name(short: str) -> str:
            return f"{PREFIX}_{short}"

        r = registry
        self.consumed = Counter(
            name("events_consumed"), "Usage events taken from the topic.", registry=r
        )
        self.processed = Counter(
            name("events_processed"),
            "Usage events committed, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.rejected = Counter(
            name("events_rejected"),
            "Usage events rejected (dead-lettered), by reason.",
            ["reason"],
            registry=r,
        )

        def by_model(short: str, documentation: str) -> Counter:
            return Counter(name(short), documentation, ["provider_id", "model"], registry=r)

        self.credits = by_model("credits_deducted", "Credits deducted, by provider and model.")
        self.vendor_cost = by_model(
            "vendor_cost_usd", "Vendor cost of booked usage in USD, by provider and model."
        )
        self.billed = by_model(
            "billed_usd", "USD value of the credits charged, by provider and model."
        )
        self.gateway_cost = by_model(
            "gateway_cost_usd",
            "The cost gateways reported for booked requests (LiteLLM's response_cost), "
            "by provider and model; compare with gateway_costed_vendor_cost_usd.",
        )
        self.gateway_costed_vendor_cost = by_model(
            "gateway_costed_vendor_cost_usd",
            "Our vendor cost of the booked requests that carry a gateway's cost.",
        )
        self.gateway_cost_mismatches = by_model(
            "gateway_cost_mismatches",
            "Booked requests whose gateway cost, to 8 decimals, is not our vendor cost.",
        )
        self.batch_size = Histogram(
            name("batch_size_events"),
            "Events per committed batch.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            name("batch_commit_seconds"),
            "Time to book one batch in PostgreSQL, retries included.",
            buckets=COMMIT_SECONDS_BUCKETS,
            registry=r,
        )
        self.latency = BatchHistogram(
            name("event_commit_latency_seconds"),
            "From an event's Kafka timestamp (publish time) to its batch's commit.",
            LATENCY_SECONDS_BUCKETS,
            r,
        )
        self.lag = Gauge(
            name("consumer_lag_messages"),
            "Messages between a partition's high watermark and the committed offset.",
            ["topic", "partition"],
            registry=r,
        )
        self.db_retries = Counter(
            name("db_retries"),
            "Batch transactions retried after a retriable error.",
            registry=r,
        )
        self.db_errors = Counter(
            name("db_errors"),
            "Database errors not retried: events the schema refused, failed alert outbox, "
            "credit expiry or stale-price runs.",
            ["kind"],
            registry=r,
        )
        self.dlq_published = Counter(
            name("dlq_published"), "Records published to the dead-letter topic.", registry=r
        )
        self.alerts_published = Counter(
            name("alerts_published"), "Credit alerts published.", registry=r
        )
        self.prices_stale = Gauge(
            name("prices_stale"),
            "Vendor prices in effect overdue for verification (`prices stale` lists them).",
            registry=r,
        )
        self.up = Gauge(name("worker_up"), "1 while the worker runs.", registry=r)
        self.last_commit = Gauge(
            name("last_commit_timestamp_seconds"),
            "Unix time of the last committed batch.",
            registry=r,
        )
        for outcome in OUTCOMES:
            self.processed.labels(outcome)
        for kind in ("refused_event", "alert_outbox", "expiry", "stale_prices"):
            self.db_errors.labels(kind)
        self.up.set(1)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def new_metrics(with_process: bool = True) -> Metrics:
    """Metrics in a fresh registry, with the process collector (CPU, memory, start time)."""
    registry = CollectorRegistry()
    if with_process:
        ProcessCollector(registry=registry)
    return Metrics(registry)


@dataclass
class GatewayCosts:
    """The gateway-reported costs of one model's booked requests, next to ours."""

    reported: Decimal = Decimal(0)
    ours: Decimal = Decimal(0)
    mismatches: int = 0


@dataclass(frozen=True)
class BatchObservation:
    """What one committed batch adds to the metrics, computed without touching them."""

    consumed: int
    outcomes: Mapping[str, int]
    rejected: Mapping[str, int]
    credits: Mapping[tuple[str, str], int]
    vendor_cost: Mapping[tuple[str, str], Decimal]
    billed: Mapping[tuple[str, str], Decimal]
    gateway_costs: Mapping[tuple[str, str], GatewayCosts]
    latencies: Sequence[float]
    retries: int
    committed_at: float


def summarize(
    result: BatchResult, messages: Sequence[SourceMessage], committed_at: float
) -> BatchObservation:
    credits: dict[tuple[str, str], int] = defaultdict(int)
    vendor_cost: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    billed: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    gateway_costs: dict[tuple[str, str], GatewayCosts] = defaultdict(GatewayCosts)
    for plan in result.plans:
        # The model rollup the transaction wrote has the sums already: a row at a time,
        # these counters cost a microsecond per event.
        for (_, provider_id, model), day in plan.model_days.items():
            key = (str(provider_id), model)
            credits[key] += day.credits
            vendor_cost[key] += day.vendor_cost
            billed[key] += day.credit_value_usd
            if day.gateway_costed_requests:
                costs = gateway_costs[key]
                costs.reported += day.gateway_cost_usd
                costs.ours += day.gateway_costed_vendor_cost
        for row in plan.usage_rows:
            if row.gateway_cost_usd is not None:
                reported = row.gateway_cost_usd.quantize(VENDOR_COST_EXPONENT)
                key = (str(row.provider_id), row.model_id)
                gateway_costs[key].mismatches += reported != row.vendor_cost
    latencies = [
        max(0.0, committed_at - m.timestamp_ms / 1000)
        for m in messages
        if m.timestamp_ms is not None
    ]
    return BatchObservation(
        consumed=len(messages),
        outcomes=dict(result.outcomes),
        rejected=dict(result.rejected),
        credits=dict(credits),
        vendor_cost=dict(vendor_cost),
        billed=dict(billed),
        gateway_costs=dict(gateway_costs),
        latencies=latencies,
        retries=result.retries,
        committed_at=committed_at,
    )


def observe_batch(
    metrics: Metrics,
    result: BatchResult,
    messages: Sequence[SourceMessage],
    commit_seconds: float,
    committed_at: float,
) -> BatchObservation:
    """Record a committed batch; `committed_at` is Unix time, `commit_seconds` its duration."""
    seen = summarize(result, messages, committed_at)
    metrics.consumed.inc(seen.consumed)
    metrics.batch_size.observe(seen.consumed)
    metrics.commit_seconds.observe(commit_seconds)
    for outcome, count in seen.outcomes.items():
        metrics.processed.labels(outcome).inc(count)
    for reason, count in seen.rejected.items():
        metrics.rejected.labels(reason).inc(count)
        if reason == "database_rejected":
            metrics.db_errors.labels("refused_event").inc(count)
    metrics.dlq_published.inc(sum(seen.rejected.values()))
    metrics.alerts_published.inc(result.alerts_published)
    for (provider, model), credits in seen.credits.items():
        metrics.credits.labels(provider, model).inc(credits)
        metrics.vendor_cost.labels(provider, model).inc(float(seen.vendor_cost[provider, model]))
        metrics.billed.labels(provider, model).inc(float(seen.billed[provider, model]))
    for (provider, model), costs in seen.gateway_costs.items():
        metrics.gateway_cost.labels(provider, model).inc(float(costs.reported))
        metrics.gateway_costed_vendor_cost.labels(provider, model).inc(float(costs.ours))
        metrics.gateway_cost_mismatches.labels(provider, model).inc(costs.mismatches)
    metrics.latency.observe_many(seen.latencies)
    metrics.db_retries.inc(seen.retries)
    metrics.last_commit.set(committed_at)
    return seen


def consumer_lag(
    highwaters: Mapping[tuple[str, int], int | None],
    committed: Mapping[tuple[str, int], int | None],
) -> dict[tuple[str, int], int]:
    """Lag per (topic, partition): high watermark minus committed offset, never negative.

    A partition whose high watermark is not known yet is left out; one that has no
    committed offset yet counts from the high watermark's full value.
    """
    lag = {}
    for tp, high in highwaters.items():
        if high is None:
            continue
        done = committed.get(tp)
        lag[tp] = max(0, high - (done or 0))
    return lag


def set_lag(metrics: Metrics, lag: Mapping[tuple[str, int], int]) -> None:
    """Replace the lag gauges, so partitions this worker no longer owns disappear."""
    metrics.lag.clear()
    for (topic, partition), value in lag.items():
        metrics.lag.labels(topic, str(partition)).set(value)


SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}


def metric_names(metrics: Metrics) -> Iterable[str]:
    """Every sample name the registry can export (`_total`, `_bucket`, ... included),
    also of labelled metrics that have no sample yet."""
    for family in metrics.registry.collect():
        for suffix in SAMPLE_SUFFIXES.get(family.type, ("",)):
            yield family.name + suffix
