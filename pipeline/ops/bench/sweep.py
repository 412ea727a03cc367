"""The pipeline against offered rate: one topic, one database, `workers` workers in one
group, and a stream published at each rate in turn (token bucket; None = as fast as the
producer goes), as single-event records or as batch records.

Each point's events have their own request ids, so its throughput (rows / commit span)
and publish-to-commit latency come from its own ledger rows. The workers run from a
warm-up before the first point to the end, so no point pays for their start.

Batch records at a fixed rate are what a producer that flushes every `FLUSH_SECONDS`
writes: each record holds that long's events of one partition (up to BATCH_RECORD_MAX).
Latency is measured from the record's publish, so the producer's own wait is not in it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pipeline.core.records import BATCH_RECORD_MAX
from pipeline.ops.bench import measure, stats
from pipeline.ops.bench.publish import Published, first_publish_ms, publish
from pipeline.ops.bench.runners import Context, start_worker, stop, wait_rows
from pipeline.ops.bench.traffic import Stream, as_batch_records
from pipeline.ops.bench.view_probe import ViewProbe
from pipeline.ops.devstack.ports import free_port
from pipeline.stream import kafka_io
from pipeline.stream.kafka_access import KafkaAccess

WARMUP_EVENTS = 500
FLUSH_SECONDS = 0.05
Shape = Literal["single", "batch"]


@dataclass
class SweepPoint:
    offered_eps: float | None
    """None: as fast as the producer publishes."""
    records: int
    events: int
    publish_eps: float
    """Events actually published per second (events / publish time)."""
    throughput_eps: float | None
    books_exact: bool
    latency: dict[str, float | None]
    worker_cpu_seconds: float | None
    db_cpu_seconds: float | None
    seconds: float | None
    workers: int = 1
    record_shape: Shape = "single"
    booked_share: float | None = None
    """Publish span / commit span of the point's events: 1.0 when the worker books them
    as fast as they are offered (rates of records would mix in the redeliveries and
    malformed records, which are never booked)."""
    live_view: dict[str, float | None] | None = None
    """The live view's latency while this point was booked (`view_probe`; the first
    fixed-rate point of one worker on single-event records, when the view is on)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def point_size(rate: float | None, seconds: float, rates: Sequence[float | None]) -> int:
    """Events of one point: `seconds` worth at its rate; the max-rate point gets as many
    as the fastest fixed rate."""
    fixed = [r for r in rates if r is not None]
    return max(1, int((rate if rate is not None else max(fixed, default=10_000)) * seconds))


def batch_size(rate: float | None, partitions: int) -> int:
    """Events per batch record of a producer flushing every FLUSH_SECONDS at `rate`."""
    if rate is None:
        return BATCH_RECORD_MAX
    return max(1, min(BATCH_RECORD_MAX, round(rate * FLUSH_SECONDS / partitions)))


def _publish(
    ctx: Context, topic: str, stream: Stream, rate: float | None, shape: Shape
) -> tuple[Published, dict[Any, int], int]:
    """Publish the point's stream; (the publish, request id -> publish ms, records)."""
    bootstrap = ctx.stack.bootstrap
    if shape == "single":
        published = asyncio.run(publish(bootstrap, topic, stream.lines, stream.keys, rate))
        return published, first_publish_ms(stream, published), len(stream.lines)
    batched = as_batch_records(
        stream,
        ctx.stack.settings.topic_partitions,
        batch_size(rate, ctx.stack.settings.topic_partitions),
    )
    per_record = len(stream.lines) / len(batched.lines)
    record_rate = rate / per_record if rate is not None else None
    published = asyncio.run(publish(bootstrap, topic, batched.lines, batched.keys, record_rate))
    return published, first_publish_ms(stream, published, batched.groups), len(batched.lines)


def rate_sweep(
    ctx: Context,
    rates: Sequence[float | None],
    seconds: float,
    make_stream: Callable[[int, int], Stream],
    shape: Shape = "single",
    workers: int = 1,
) -> list[SweepPoint]:
    """One point per rate, in order; `make_stream(count, index)` makes each point's events."""
    if not rates:
        return []
    name = f"{shape}{workers}w_{ctx.tag}"
    topic = f"bench.sweep.{name}"
    asyncio.run(
        kafka_io.ensure_topic(
            KafkaAccess(ctx.stack.bootstrap), topic, ctx.stack.settings.topic_partitions
        )
    )
    database = ctx.stack.database(f"bench_s_{name}")
    web_port = free_port()
    processes = [
        start_worker(ctx, database, topic, f"bench-sweep-{name}", web_port if i == 0 else None)
        for i in range(workers)
    ]
    points: list[SweepPoint] = []
    try:
        with measure.ProcessSampler(processes[0].pid, ctx.stack.postmaster_pid()) as sampler:
            warmup = make_stream(WARMUP_EVENTS, -1)
            _publish(ctx, topic, warmup, None, shape)
            booked = warmup.unique_valid
            wait_rows(ctx, database, booked, processes, "the worker")
            for index, rate in enumerate(rates):
                stream = make_stream(point_size(rate, seconds, rates), index)
                probed = index == 0 and rate is not None and shape == "single" and workers == 1
                users = sorted({k.decode() for k in stream.keys if k}) if probed else []
                with ViewProbe(web_port, users) as probe:
                    published, publish_ms, records = _publish(ctx, topic, stream, rate, shape)
                    booked += stream.unique_valid
                    wait_rows(ctx, database, booked, processes, "the worker")
                timing = measure.ledger_timing(database, publish_ms)
                cpu, db_cpu = sampler.cpu_between(timing.first_commit, timing.last_commit)
                point = SweepPoint(
                    offered_eps=rate,
                    records=records,
                    events=timing.matched,
                    publish_eps=stats.rate(len(stream.lines), published.seconds) or 0.0,
                    throughput_eps=stats.rate(timing.matched, timing.span),
                    books_exact=timing.matched == stream.unique_valid and timing.rows == booked,
                    latency=stats.latency_summary(timing.latencies_ms),
                    worker_cpu_seconds=cpu if workers == 1 else None,
                    db_cpu_seconds=db_cpu,
                    seconds=timing.span,
                    workers=workers,
                    record_shape=shape,
                    booked_share=stats.ratio(published.seconds, timing.span),
                    live_view=probe.summary(),
                )
                points.append(point)
                ctx.progress(_describe(point))
    finally:
        for process in processes:
            stop(process)
        ctx.stack.drop(f"bench_s_{name}")
    return points


def _describe(point: SweepPoint) -> str:
    offered = f"{point.offered_eps:,.0f}/s" if point.offered_eps else "max"
    shape = f"{point.record_shape}, {point.workers} worker{'s' if point.workers > 1 else ''}"
    p99 = point.latency.get("p99_ms")
    eps = point.throughput_eps or 0.0
    return (
        f"sweep {offered} ({shape}): published {point.publish_eps:,.0f}/s, "
        f"booked {eps:,.0f}/s, p99 {p99:,.0f} ms"
        if p99 is not None
        else f"sweep {offered} ({shape}): no latency"
    )
