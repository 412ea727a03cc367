"""The phases of one `bench api` repeat, against a running API and worker: the checks
(the load client's closed loop while this process publishes the background stream at its
steady rate for the worker to book) and ingest at one offered rate (the open loop, in
arrays of ARRAY_EVENTS events). `load` runs the load client (`api_load`) as a process of
its own and samples the API's and its own CPU meanwhile. Each phase adds the events it
had published to those the worker must book.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from pipeline.ops.bench import api_results, measure, runners, stats, traffic
from pipeline.ops.bench.api_load import INGEST_ROUTE, READY, LoadPlan, arrays, write_bodies
from pipeline.ops.bench.publish import Published, first_publish_ms, publish
from pipeline.ops.demo.sample import DemoUser

ARRAY_EVENTS = 100


@dataclass(frozen=True)
class ApiBenchParams:
    users: int = 10_000
    clients: int = 1_000
    """Concurrent clients of the checks, and the load client's connections."""
    seconds: float = 20.0
    """Of the checks phase."""
    ingest_seconds: float = 15.0
    """Of each ingest rate."""
    ingest_rates: list[float] = field(default_factory=lambda: [1000.0, 5000.0])
    """Events per second offered, in arrays of ARRAY_EVENTS."""
    background_eps: float = 1000.0
    """Events per second published for the worker during the checks."""
    think_ms: float = 0.0
    credits: int = 100
    """What an entitlement check asks for."""
    repeat: int = 1
    seed: int = 7
    catalog: Path = Path()
    deadline_seconds: float = 300.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"catalog": self.catalog.name, "array_events": ARRAY_EVENTS}


@dataclass(frozen=True)
class Api:
    url: str
    process: subprocess.Popen[bytes]
    read_token: str
    ingest_token: str


@dataclass
class Repeat:
    """One repeat: its database and topic, the worker and the API, and every event published
    so far that the worker must book (warm-up, background, the arrays answered 2xx)."""

    ctx: runners.Context
    params: ApiBenchParams
    database: str
    topic: str
    make: Callable[..., traffic.Stream]
    """make(count, index, **shares): the repeat's index-th stream, no malformed events."""
    worker: subprocess.Popen[bytes]
    api: Api
    expected: set[UUID]
    seed: int

    @property
    def processes(self) -> list[subprocess.Popen[bytes]]:
        return [self.worker, self.api.process]

    def checks(self, users: tuple[DemoUser, ...]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The closed loop while the background is published; its series, and the
        background's figures once the worker has booked it."""
        params, bootstrap = self.params, self.ctx.stack.bootstrap
        background = self.make(max(1, round(params.background_eps * params.seconds)), 1)
        published: list[Published] = []

        def publish_background() -> None:
            rate = params.background_eps
            sending = publish(bootstrap, self.topic, background.lines, background.keys, rate)
            published.append(asyncio.run(sending))

        plan = LoadPlan("checks", self.api.url, self.api.read_token, params.clients,
                        params.seconds, tuple(str(u.id) for u in users), params.credits,
                        params.think_ms, self.seed)  # fmt: skip
        series, _ = load(self.ctx, "checks", plan, self.api.process, None, publish_background)
        self.ctx.progress(describe(series))
        self.expected |= background.valid_ids()
        runners.wait_rows(self.ctx, self.database, len(self.expected), self.processes,
                          "the worker")  # fmt: skip
        timing = measure.ledger_timing(self.database, first_publish_ms(background, published[0]))
        latency = stats.latency_summary(timing.latencies_ms)
        self.ctx.progress(
            f"background: published {published[0].achieved_rate:,.0f} events/s, "
            f"publish to commit p99 {_n(latency['p99_ms'])} ms"
        )
        return series, {
            "events": len(background.lines),
            "unique_valid": background.unique_valid,
            "publish_eps": published[0].achieved_rate,
            "booked_eps": stats.rate(timing.matched, timing.span),
            "latency": latency,
        }

    def ingest(self, index: int, rate: float) -> list[dict[str, Any]]:
        """The open loop at `rate` events/s in arrays; its series."""
        posts = max(1, round(rate * self.params.ingest_seconds / ARRAY_EVENTS))
        events = self.make(posts * ARRAY_EVENTS, 2 + index, duplicate_share=0.0)
        bodies = self.ctx.stack.settings.state_dir / f"bodies-{self.ctx.tag}-{index}.ndjson"
        write_bodies(bodies, arrays(events.lines, ARRAY_EVENTS))
        plan = LoadPlan("ingest", self.api.url, self.api.ingest_token, self.params.clients,
                        bodies=str(bodies), rate=rate / ARRAY_EVENTS)  # fmt: skip
        series, samples = load(self.ctx, f"ingest-{index}", plan, self.api.process, rate)
        bodies.unlink()
        self.ctx.progress(describe(series))
        status = samples["routes"][INGEST_ROUTE]["status"]
        taken = api_results.accepted_positions(status, ARRAY_EVENTS, len(events.lines))
        self.expected |= {rid for p in taken if (rid := events.request_ids[p]) is not None}
        return series


def load(
    ctx: runners.Context,
    name: str,
    plan: LoadPlan,
    api: subprocess.Popen[bytes],
    offered_eps: float | None,
    meanwhile: Callable[[], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run the load client on `plan` (and `meanwhile` once it is warm); its series, with
    the API's and the client's CPU (share of one core) over the phase, and its samples."""
    state = ctx.stack.settings.state_dir
    plan_path, out = state / f"{name}-{ctx.tag}.plan.json", state / f"{name}-{ctx.tag}.json"
    plan.write(plan_path)
    command = [sys.executable, "-m", "pipeline.ops.bench.api_load", str(plan_path), str(out)]
    with (state / f"load-{ctx.tag}.log").open("ab") as log:
        client = subprocess.Popen(command, env=dict(ctx.base_env), stdout=subprocess.PIPE,
                                  stderr=log)  # fmt: skip
    try:
        with (
            measure.ProcessSampler(client.pid) as client_cpu,
            measure.ProcessSampler(api.pid) as api_cpu,
        ):
            assert client.stdout is not None
            if client.stdout.readline().decode().strip() != READY:
                raise runners.BenchFailed(f"the load client ({name}) failed; see its log")
            began = time.time()
            if meanwhile is not None:
                meanwhile()
            client.wait(ctx.deadline_seconds)
            ended = time.time()
    except subprocess.TimeoutExpired:
        raise runners.BenchFailed(
            f"the load client ({name}) did not finish in {ctx.deadline_seconds:.0f}s"
        ) from None
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        if client.stdout is not None:
            client.stdout.close()
    if client.returncode != 0:
        raise runners.BenchFailed(f"the load client ({name}) exited with {client.returncode}")
    samples = json.loads(out.read_text())
    plan_path.unlink()
    out.unlink()

    def share(sampler: measure.ProcessSampler) -> float | None:
        return stats.ratio(sampler.cpu_between(began, ended)[0], ended - began)

    series = api_results.phase_series(samples, plan.kind, offered_eps, plan.connections)
    for s in series:
        s |= {"api_cpu": share(api_cpu), "client_cpu": share(client_cpu)}
    return series, samples


def _n(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def describe(series: list[dict[str, Any]]) -> str:
    return "; ".join(
        f"{api_results.label(s)}: {_n(s['requests_per_s'])}/s, p99 "
        f"{'-' if s['p99_ms'] is None else format(s['p99_ms'], ',.1f')} ms, {s['errors']} errors"
        for s in series
    )
