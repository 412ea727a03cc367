"""The pipeline against offered rate: one worker, one topic, one database, and a stream
published at each rate in turn (token bucket; None = as fast as the producer goes).

Each point's events have their own request ids, so its throughput (rows / commit span)
and publish-to-commit latency come from its own ledger rows. The worker runs from a
warm-up before the first point to the end, so no point pays for its start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pipeline import kafka_io
from pipeline.bench import measure, stats
from pipeline.bench.publish import first_publish_ms, publish
from pipeline.bench.runners import Context, start_worker, stop, wait_rows
from pipeline.bench.stream import Stream

WARMUP_EVENTS = 500


@dataclass
class SweepPoint:
    offered_eps: float | None
    """None: as fast as the producer publishes."""
    records: int
    events: int
    publish_eps: float
    """The rate actually published (records / publish time)."""
    throughput_eps: float | None
    books_exact: bool
    latency: dict[str, float | None]
    worker_cpu_seconds: float | None
    db_cpu_seconds: float | None
    seconds: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def point_size(rate: float | None, seconds: float, rates: Sequence[float | None]) -> int:
    """Records of one point: `seconds` worth at its rate; the max-rate point gets as many
    as the fastest fixed rate."""
    fixed = [r for r in rates if r is not None]
    return max(1, int((rate if rate is not None else max(fixed, default=10_000)) * seconds))


def rate_sweep(
    ctx: Context,
    rates: Sequence[float | None],
    seconds: float,
    make_stream: Callable[[int, int], Stream],
) -> list[SweepPoint]:
    """One point per rate, in order; `make_stream(count, index)` makes each point's events."""
    topic = f"bench.sweep.{ctx.tag}"
    bootstrap = ctx.stack.bootstrap
    asyncio.run(kafka_io.ensure_topic(bootstrap, topic, ctx.stack.settings.topic_partitions))
    name = f"bench_s_{ctx.tag}"
    database = ctx.stack.database(name)
    worker = start_worker(ctx, database, topic, f"bench-sweep-{ctx.tag}")
    points: list[SweepPoint] = []
    try:
        with measure.ProcessSampler(worker.pid, ctx.stack.postmaster_pid()) as sampler:
            warmup = make_stream(WARMUP_EVENTS, -1)
            asyncio.run(publish(bootstrap, topic, warmup.lines, warmup.keys, None))
            booked = warmup.unique_valid
            wait_rows(ctx, database, booked, worker, "the worker")
            for index, rate in enumerate(rates):
                stream = make_stream(point_size(rate, seconds, rates), index)
                published = asyncio.run(publish(bootstrap, topic, stream.lines, stream.keys, rate))
                booked += stream.unique_valid
                wait_rows(ctx, database, booked, worker, "the worker")
                timing = measure.ledger_timing(database, first_publish_ms(stream, published))
                cpu, db_cpu = sampler.cpu_between(timing.first_commit, timing.last_commit)
                point = SweepPoint(
                    offered_eps=rate,
                    records=len(stream.lines),
                    events=timing.matched,
                    publish_eps=published.achieved_rate,
                    throughput_eps=stats.rate(timing.matched, timing.span),
                    books_exact=timing.matched == stream.unique_valid and timing.rows == booked,
                    latency=stats.latency_summary(timing.latencies_ms),
                    worker_cpu_seconds=cpu,
                    db_cpu_seconds=db_cpu,
                    seconds=timing.span,
                )
                points.append(point)
                ctx.progress(_describe(point))
    finally:
        stop(worker)
        ctx.stack.drop(name)
    return points


def _describe(point: SweepPoint) -> str:
    offered = f"{point.offered_eps:,.0f}/s" if point.offered_eps else "max"
    p99 = point.latency.get("p99_ms")
    eps = point.throughput_eps or 0.0
    return (
        f"sweep {offered}: published {point.publish_eps:,.0f}/s, booked {eps:,.0f}/s, "
        f"p99 {p99:,.0f} ms"
        if p99 is not None
        else f"sweep {offered}: no latency"
    )
