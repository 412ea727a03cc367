"""The runners over one published stream, side by side.

(a) baseline: the seed's per-request flow (`consumers baseline` subprocess), with one
    connection, and (baseline_pool) with the seed's pool of 20 transactions in flight;
(b) pipeline: the real worker (`python -m pipeline worker` subprocess); pipeline_2w: two
    of them in one group; (b2) pipeline_batch: one worker on the same events as batch
    records;
(c) copy: the same ledger rows COPYed straight into PostgreSQL, no Kafka, no logic;
(d) bare: an aiokafka consumer that reads and commits, nothing else;
(e) faust_floor: the worker's Faust app and read path, acknowledging without booking.
Each consumer has its own group, each database is a fresh copy of the template.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from uuid import UUID

import psycopg

from pipeline.ops import worker_process
from pipeline.ops.bench import measure, profile, stats
from pipeline.ops.bench.bench_stack import BenchStack
from pipeline.ops.bench.publish import Published, first_publish_ms, publish
from pipeline.ops.bench.traffic import Stream, as_batch_records
from pipeline.ops.devstack.ports import free_port
from pipeline.ops.devstack.waiting import wait_until
from pipeline.stream import kafka_io
from pipeline.stream.kafka_access import KafkaAccess

POLL_SECONDS = 0.25
STOP_SECONDS = 30.0


class BenchFailed(Exception):
    """A runner could not finish (died, or missed its deadline)."""


@dataclass
class RunnerResult:
    runner: str
    events: int
    """Unique valid events booked (read, for the bare consumer)."""
    seconds: float | None
    throughput_eps: float | None
    books_exact: bool | None
    """The ledger holds exactly the stream's unique valid events."""
    credits: int | None = None
    cpu_seconds: float | None = None
    db_cpu_seconds: float | None = None
    peak_rss_mib: float | None = None
    latency: dict[str, float | None] | None = None
    """Publish to commit (receipt for the bare consumer), ms; a drained topic's latency
    includes its time queued."""
    complete: bool = True
    """False when the runner stopped at its time budget (the baseline) before the end."""
    events_per_transaction: float | None = None
    """Ledger rows per committing transaction (the books' runners)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Context:
    stack: BenchStack
    base_env: Mapping[str, str]
    """The environment the worker subprocess starts from (the caller's)."""
    tag: str
    deadline_seconds: float
    baseline_seconds: float
    """The baseline's time budget (0: none): it is slow, and steady from the start."""
    progress: Callable[[str], None]


def _from_ledger(
    name: str, timing: measure.LedgerTiming, expected: int, sampler: measure.ProcessSampler | None
) -> RunnerResult:
    cpu, db_cpu = (
        sampler.cpu_between(timing.first_commit, timing.last_commit) if sampler else (None, None)
    )
    peak = sampler.peak_kib if sampler else None
    return RunnerResult(
        runner=name,
        events=timing.matched,
        seconds=timing.span,
        throughput_eps=stats.rate(timing.matched, timing.span),
        books_exact=timing.rows == expected == timing.matched,
        credits=timing.credits,
        cpu_seconds=cpu,
        db_cpu_seconds=db_cpu,
        peak_rss_mib=peak / 1024 if peak else None,
        latency=stats.latency_summary(timing.latencies_ms),
        events_per_transaction=(
            timing.matched / timing.transactions if timing.transactions else None
        ),
    )


def _worker_env(
    ctx: Context, database: str, topic: str, group: str, web_port: int
) -> dict[str, str]:
    return dict(
        ctx.base_env,
        DATABASE_URL=database,
        KAFKA_BOOTSTRAP_SERVERS=ctx.stack.bootstrap,
        USAGE_TOPIC=topic,
        DLQ_TOPIC=f"{topic}.dlq",
        ALERTS_TOPIC=f"{topic}.alerts",
        WORKER_ID=group,
        WORKER_WEB_PORT=str(web_port),
        USAGE_PIPELINE_STATE_DIR=str(ctx.stack.settings.state_dir / group),
        TOPIC_PARTITIONS=str(ctx.stack.settings.topic_partitions),
    )


def start_worker(
    ctx: Context, database: str, topic: str, group: str, web_port: int | None = None
) -> subprocess.Popen[bytes]:
    for extra in (f"{topic}.dlq", f"{topic}.alerts"):
        asyncio.run(kafka_io.ensure_topic(KafkaAccess(ctx.stack.bootstrap), extra, 1))
    log = ctx.stack.settings.state_dir / f"{group}.log"
    env = _worker_env(ctx, database, topic, group, web_port or free_port())
    return worker_process.start_worker(env, log)


def stop(process: subprocess.Popen[bytes]) -> None:
    worker_process.stop_worker(process, STOP_SECONDS)


def wait_rows(
    ctx: Context,
    database: str,
    rows: int,
    processes: Sequence[subprocess.Popen[bytes]],
    what: str,
    request_ids: Collection[UUID] | None = None,
) -> None:
    """Wait until the ledger has `rows` rows (of `request_ids` only, if given); fail if a
    process dies or time runs out."""

    def booked() -> bool:
        for process in processes:
            if process.poll() is not None:
                raise BenchFailed(f"{what} exited with {process.returncode}; see its log")
        return measure.ledger_rows(database, request_ids) >= rows

    if not wait_until(booked, ctx.deadline_seconds, POLL_SECONDS):
        raise BenchFailed(f"{what} did not book {rows} events in {ctx.deadline_seconds:.0f}s")


def run_pipeline(
    ctx: Context,
    topic: str,
    stream: Stream,
    publish_ms: dict[UUID, int],
    name: str = "pipeline",
    workers: int = 1,
) -> tuple[RunnerResult, str]:
    """(b) `workers` workers in one group drain the topic into a fresh database; returns
    the result (CPU summed over the workers) and the database (the COPY runner reuses its
    rows)."""
    database = ctx.stack.database(f"bench_{name}_{ctx.tag}")
    group = f"bench-{name}-{ctx.tag}"
    processes = [start_worker(ctx, database, topic, group) for _ in range(workers)]
    try:
        postmaster = ctx.stack.postmaster_pid()
        with contextlib.ExitStack() as samplers:
            sampled = [
                samplers.enter_context(
                    measure.ProcessSampler(p.pid, postmaster if i == 0 else None)
                )
                for i, p in enumerate(processes)
            ]
            wait_rows(ctx, database, stream.unique_valid, processes, "the worker")
    finally:
        for process in processes:
            stop(process)
    timing = measure.ledger_timing(database, publish_ms)
    result = _from_ledger(name, timing, stream.unique_valid, sampled[0])
    if workers > 1:
        cpus = [s.cpu_between(timing.first_commit, timing.last_commit)[0] for s in sampled]
        result.cpu_seconds = None if None in cpus else sum(c for c in cpus if c is not None)
    return result, database


def run_floor(ctx: Context, topic: str, stream: Stream) -> RunnerResult:
    """(e) the worker's Faust app and read path, booking nothing
    (`pipeline.ops.bench.floor`). Timed from its first take to its last."""
    group = f"bench-floor-{ctx.tag}"
    out = ctx.stack.settings.state_dir / f"{group}.json"
    log = open(ctx.stack.settings.state_dir / f"{group}.log", "ab")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.ops.bench.floor", "--expect", str(len(stream.lines)),
         "--out", str(out)],
        env=_worker_env(ctx, "", topic, group, free_port()),
        stdout=log,
        stderr=log,
    )  # fmt: skip
    try:
        with measure.ProcessSampler(process.pid) as sampler:
            process.wait(ctx.deadline_seconds)
    except subprocess.TimeoutExpired:
        raise BenchFailed(
            f"the Faust floor did not finish in {ctx.deadline_seconds:.0f}s"
        ) from None
    finally:
        stop(process)
    if process.returncode != 0 or not out.exists():
        raise BenchFailed(f"the Faust floor exited with {process.returncode}; see its log")
    seen = json.loads(out.read_text())
    return _read_only(
        "faust_floor", stream, seen["records"], seen["first_receipt"], seen["last_receipt"],
        sampler,
    )  # fmt: skip


def _read_only(
    name: str,
    stream: Stream,
    records: int,
    first: float | None,
    last: float | None,
    sampler: measure.ProcessSampler,
    latency: dict[str, float | None] | None = None,
) -> RunnerResult:
    """A runner that reads without booking, timed from `first` to `last` (epoch s)."""
    span = last - first if first is not None and last is not None and last > first else None
    cpu, _ = sampler.cpu_between(first, last)
    return RunnerResult(
        runner=name,
        events=stream.unique_valid if records == len(stream.lines) else 0,
        seconds=span,
        throughput_eps=stats.rate(stream.unique_valid, span),
        books_exact=None,
        cpu_seconds=cpu,
        peak_rss_mib=sampler.peak_kib / 1024 if sampler.peak_kib else None,
        latency=latency,
    )


def _consumer(
    ctx: Context,
    kind: str,
    topic: str,
    database: str | None,
    max_seconds: float = 0,
    connections: int = 1,
) -> tuple[dict[str, Any], measure.ProcessSampler]:
    command = [
        sys.executable, "-m", "pipeline.ops.bench.consumers", kind,
        "--bootstrap", ctx.stack.bootstrap, "--topic", topic,
        "--group", f"bench-{kind}-{connections}-{ctx.tag}", "--connections", str(connections),
        "--usd-per-credit", str(ctx.stack.settings.usd_per_credit),
        "--max-future-skew", str(ctx.stack.settings.max_future_skew_seconds),
        "--max-seconds", str(max_seconds),
    ]  # fmt: skip
    if database is not None:
        command += ["--database", database]
    log = open(ctx.stack.settings.state_dir / f"{kind}-{connections}-{ctx.tag}.log", "ab")  # noqa: SIM115
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log)
    with measure.ProcessSampler(process.pid, ctx.stack.postmaster_pid()) as sampler:
        try:
            out, _ = process.communicate(timeout=ctx.deadline_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise BenchFailed(
                f"the {kind} consumer did not finish in {ctx.deadline_seconds:.0f}s"
            ) from None
    if process.returncode != 0:
        raise BenchFailed(f"the {kind} consumer exited with {process.returncode}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result, sampler


BASELINE_POOL = 20
"""The seed's pool size (Task 3.3: 2 x cores + spindles, rounded up for a server)."""


def run_baseline(
    ctx: Context, topic: str, stream: Stream, publish_ms: dict[UUID, int], connections: int = 1
) -> RunnerResult:
    """(a) the seed's per-request flow, `connections` transactions in flight, into a fresh
    database within its time budget; its books must then hold exactly the valid events it
    booked."""
    name = "baseline" if connections == 1 else "baseline_pool"
    database = ctx.stack.database(f"bench_{name}_{ctx.tag}")
    out, sampler = _consumer(ctx, "baseline", topic, database, ctx.baseline_seconds, connections)
    timing = measure.ledger_timing(database, publish_ms)
    ctx.stack.drop(f"bench_{name}_{ctx.tag}")
    complete = not out["stopped_early"]
    expected = stream.unique_valid if complete else out["booked"]
    result = _from_ledger(name, timing, expected, sampler)
    result.books_exact = bool(result.books_exact) and timing.rows == out["booked"]
    result.complete = complete
    return result


def run_bare(ctx: Context, topic: str, stream: Stream) -> RunnerResult:
    """(d) read and commit, nothing else. Timed from the partitions' assignment (its first
    fetch starts then; a whole topic may arrive in one batch) to the last batch."""
    out, sampler = _consumer(ctx, "bare", topic, None)
    return _read_only(
        "bare", stream, out["records"], out["assigned"], out["last_receipt"], sampler,
        out["receipt_latency"],
    )  # fmt: skip


_USAGE = (
    "id, request_id, user_id, subscription_id, model_id, provider_id, input_tokens, "
    "output_tokens, cached_input_tokens, cache_write_tokens, vendor_cost, margin_multiplier, "
    "credit_value_usd, credits_deducted, request_type, streaming_segments, request_started_at, "
    "request_completed_at, processing_time_ms, status, error_message, is_streaming_complete, "
    "user_tier_at_request, region, deduction_record_id, event_fingerprint, created_at"
)
_DEDUCTIONS = (
    "id, user_id, amount, balance_before, balance_after, request_id, token_vendor_cost, "
    "margin_multiplier, gross_margin, reason, status, processed_at, created_at"
)


def run_copy(
    ctx: Context, source: str, stream: Stream, publish_ms: dict[UUID, int]
) -> RunnerResult:
    """(c) the pipeline's ledger rows, COPYed (binary) into a fresh database in one
    transaction: the physical limit of writing these rows."""
    blobs = []
    with psycopg.connect(source) as conn, conn.cursor() as cur:
        for table, columns, where in (
            ("credit_deduction_ledger", _DEDUCTIONS, "WHERE request_id IS NOT NULL"),
            ("token_usage_ledger", _USAGE, ""),
        ):
            query = f"COPY (SELECT {columns} FROM {table} {where}) TO STDOUT (FORMAT binary)"
            with cur.copy(query) as copy:
                blobs.append((table, columns, b"".join(bytes(b) for b in copy)))
    target = ctx.stack.database(f"bench_c_{ctx.tag}")
    with psycopg.connect(target) as conn:
        began = time.monotonic()
        with conn.transaction(), conn.cursor() as cur:
            for table, columns, data in blobs:
                with cur.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT binary)") as copy:
                    copy.write(data)
        seconds = time.monotonic() - began
    timing = measure.ledger_timing(target, publish_ms)
    ctx.stack.drop(f"bench_c_{ctx.tag}")
    return RunnerResult(
        runner="copy",
        events=timing.matched,
        seconds=seconds,
        throughput_eps=stats.rate(timing.matched, seconds),
        books_exact=timing.rows == stream.unique_valid == timing.matched,
        credits=timing.credits,
    )


def side_by_side(
    ctx: Context, stream: Stream, batch_size: int
) -> tuple[dict[str, RunnerResult], Published, dict[str, float]]:
    """Publish the stream once per record shape, then let each runner drain it in turn;
    returns the results, the single-record publish, and the booking stages (µs/event)."""
    topic = f"bench.stream.{ctx.tag}"
    bootstrap = ctx.stack.bootstrap
    partitions = ctx.stack.settings.topic_partitions
    asyncio.run(kafka_io.ensure_topic(KafkaAccess(bootstrap), topic, partitions))
    published = asyncio.run(publish(bootstrap, topic, stream.lines, stream.keys, None))
    ctx.progress(f"published {len(stream.lines)} records at {published.achieved_rate:,.0f}/s")
    publish_ms = first_publish_ms(stream, published)
    results: dict[str, RunnerResult] = {}
    results["bare"] = run_bare(ctx, topic, stream)
    ctx.progress(f"(d) bare consumer: {_eps(results['bare'])}")
    results["faust_floor"] = run_floor(ctx, topic, stream)
    ctx.progress(f"(e) Faust floor: {_eps(results['faust_floor'])}")
    results["pipeline"], pipeline_db = run_pipeline(ctx, topic, stream, publish_ms)
    ctx.progress(f"(b) pipeline: {_eps(results['pipeline'])}")
    results["copy"] = run_copy(ctx, pipeline_db, stream, publish_ms)
    ctx.progress(f"(c) COPY limit: {_eps(results['copy'])}")
    ctx.stack.drop(f"bench_pipeline_{ctx.tag}")
    results["pipeline_2w"], _ = run_pipeline(
        ctx, topic, stream, publish_ms, "pipeline_2w", workers=2
    )
    ctx.stack.drop(f"bench_pipeline_2w_{ctx.tag}")
    ctx.progress(f"(b) two workers: {_eps(results['pipeline_2w'])}")

    batched = as_batch_records(stream, partitions, batch_size)
    batch_topic = f"bench.batch.{ctx.tag}"
    asyncio.run(kafka_io.ensure_topic(KafkaAccess(bootstrap), batch_topic, partitions))
    batch_published = asyncio.run(
        publish(bootstrap, batch_topic, batched.lines, batched.keys, None)
    )
    ctx.progress(f"published {len(batched.lines)} batch records of up to {batch_size} events")
    batch_ms = first_publish_ms(stream, batch_published, batched.groups)
    results["pipeline_batch"], _ = run_pipeline(
        ctx, batch_topic, stream, batch_ms, "pipeline_batch"
    )
    ctx.stack.drop(f"bench_pipeline_batch_{ctx.tag}")
    ctx.progress(f"(b2) pipeline on batch records: {_eps(results['pipeline_batch'])}")

    stages = profile.booking_stages(
        ctx.stack, stream, f"{topic}.dlq", ctx.tag, results["pipeline"].events_per_transaction
    )
    ctx.progress("booking stages (in-process), us/event: " + ", ".join(
        f"{k} {v:.1f}" for k, v in stages.items()))  # fmt: skip

    results["baseline"] = run_baseline(ctx, topic, stream, publish_ms)
    ctx.progress(f"(a) baseline: {_eps(results['baseline'])}")
    results["baseline_pool"] = run_baseline(ctx, topic, stream, publish_ms, BASELINE_POOL)
    ctx.progress(f"(a2) baseline, pool of {BASELINE_POOL}: {_eps(results['baseline_pool'])}")
    return results, published, stages


def _eps(result: RunnerResult) -> str:
    eps = result.throughput_eps
    books = {True: "books exact", False: "BOOKS MISMATCH", None: "no books"}[result.books_exact]
    part = "" if result.complete else f" ({result.events:,} events within its time budget)"
    return f"{eps:,.0f} events/s, {books}{part}" if eps else f"not measured, {books}"


def new_tag() -> str:
    return uuid.uuid4().hex[:8]
