"""The phases of one `bench api` repeat, against a running API and worker: the checks
(vegeta's open loop at the offered check rate while this process publishes the background
stream at its steady rate for the worker to book) and ingest at one offered rate (the open
loop, in arrays of ARRAY_EVENTS events). `load` runs vegeta (`pipeline.ops.bench.vegeta`)
as a process of its own and samples the API's and its CPU meanwhile. Each phase adds the
events it had published to those the worker must book.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from pipeline.ops.bench import api_results, measure, runners, stats, traffic, vegeta
from pipeline.ops.bench.publish import Published, first_publish_ms, publish
from pipeline.ops.demo.sample import DemoUser

ARRAY_EVENTS = 100


def arrays(lines: Sequence[bytes], size: int) -> list[bytes]:
    """Consecutive events as JSON arrays of up to `size`; the lines are compact JSON."""
    return [b"[" + b",".join(lines[i : i + size]) + b"]" for i in range(0, len(lines), size)]


@dataclass(frozen=True)
class ApiBenchParams:
    users: int = 10_000
    clients: int = 1_000
    """Requests in flight at most and connections open (vegeta's workers)."""
    seconds: float = 20.0
    """Of the checks phase."""
    ingest_seconds: float = 15.0
    """Of each ingest rate."""
    ingest_rates: list[float] = field(default_factory=lambda: [1000.0, 5000.0])
    """Events per second offered, in arrays of ARRAY_EVENTS."""
    background_eps: float = 1000.0
    """Events per second published for the worker during the checks."""
    check_rate: float = 1000.0
    """Checks per second offered, balance and entitlement in turn."""
    credits: int = 100
    """What an entitlement check asks for."""
    repeat: int = 1
    seed: int = 7
    catalog: Path = Path()
    vegeta: Path = Path("vegeta")
    """The load tool (`vegeta.binary()`)."""
    deadline_seconds: float = 300.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"catalog": self.catalog.name, "vegeta": vegeta.VERSION,
                               "array_events": ARRAY_EVENTS}  # fmt: skip


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
        """vegeta's checks while the background is published; their series, and the
        background's figures once the worker has booked it."""
        params, bootstrap = self.params, self.ctx.stack.bootstrap
        background = self.make(max(1, round(params.background_eps * params.seconds)), 1)
        published: list[Published] = []

        def publish_background() -> None:
            rate = params.background_eps
            sending = publish(bootstrap, self.topic, background.lines, background.keys, rate)
            published.append(asyncio.run(sending))

        targets = self._file("checks.targets")
        vegeta.write_check_targets(
            targets, self.api.url, self.api.read_token, [str(u.id) for u in users],
            params.credits, math.ceil(params.check_rate * params.seconds), self.seed,
        )  # fmt: skip
        attack = vegeta.Attack(targets, params.check_rate, params.clients, params.seconds)
        series, _ = self._load("checks", "checks", attack, None, publish_background)
        targets.unlink()
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
        targets = self._file(f"ingest-{index}.targets")
        vegeta.write_ingest_targets(targets, self.api.url, self.api.ingest_token,
                                    arrays(events.lines, ARRAY_EVENTS))  # fmt: skip
        attack = vegeta.Attack(targets, rate / ARRAY_EVENTS, self.params.clients,
                               keep_bodies=True)  # fmt: skip
        series, samples = self._load("ingest", f"ingest-{index}", attack, rate)
        targets.unlink()
        self.ctx.progress(describe(series))
        taken = vegeta.accepted_request_ids(samples.bodies.get(vegeta.INGEST_ROUTE, []))
        self.expected |= {UUID(rid) for rid in taken}
        return series

    def _load(
        self,
        phase: str,
        name: str,
        attack: vegeta.Attack,
        offered_eps: float | None,
        meanwhile: Callable[[], None] | None = None,
    ) -> tuple[list[dict[str, Any]], vegeta.Samples]:
        return load(self.ctx, self.params.vegeta, phase, name, attack, self.api.process,
                    offered_eps, meanwhile)  # fmt: skip

    def _file(self, name: str) -> Path:
        return self.ctx.stack.settings.state_dir / f"{self.ctx.tag}-{name}"


def load(
    ctx: runners.Context,
    binary: Path,
    phase: str,
    name: str,
    attack: vegeta.Attack,
    api: subprocess.Popen[bytes],
    offered_eps: float | None,
    meanwhile: Callable[[], None] | None = None,
) -> tuple[list[dict[str, Any]], vegeta.Samples]:
    """Run vegeta's `attack` (and `meanwhile` as it starts); its series, with the API's and
    vegeta's CPU (share of one core) over the phase, and its samples."""
    state = ctx.stack.settings.state_dir
    results = state / f"{name}-{ctx.tag}.bin"
    with (state / f"load-{ctx.tag}.log").open("ab") as log:
        client = subprocess.Popen(attack.command(binary, results), stdout=log, stderr=log)
    try:
        with (
            measure.ProcessSampler(client.pid) as client_cpu,
            measure.ProcessSampler(api.pid) as api_cpu,
        ):
            began = time.time()
            if meanwhile is not None:
                meanwhile()
            client.wait(ctx.deadline_seconds)
            ended = time.time()
    except subprocess.TimeoutExpired:
        raise runners.BenchFailed(
            f"vegeta ({name}) did not finish in {ctx.deadline_seconds:.0f}s"
        ) from None
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    if client.returncode != 0:
        raise runners.BenchFailed(f"vegeta ({name}) exited with {client.returncode}; see "
                                  f"{state / f'load-{ctx.tag}.log'}")  # fmt: skip
    samples = vegeta.samples(binary, results)
    results.unlink()

    def share(sampler: measure.ProcessSampler) -> float | None:
        return stats.ratio(sampler.cpu_between(began, ended)[0], ended - began)

    series = api_results.phase_series(samples.as_dict(), phase, offered_eps, attack.connections)
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
