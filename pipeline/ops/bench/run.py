"""One `bench stream`: the dedicated stack, the template database, then per repeat the
side-by-side run and the rate sweep; returns everything as JSON-ready data."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.core.records import BATCH_RECORD_MAX
from pipeline.money.catalog import load_litellm
from pipeline.ops.bench import results, runners, sweep, traffic
from pipeline.ops.bench.bench_stack import bench_stack, machine, prepare_template
from pipeline.settings import Settings


@dataclass(frozen=True)
class BenchParams:
    events: int
    users: int
    rates: list[float | None] = field(default_factory=list)
    batch_rates: list[float | None] = field(default_factory=list)
    """Offered rates of the sweep on batch records."""
    batch_size: int = BATCH_RECORD_MAX
    """Events per batch record of runner (b2)."""
    sweep_seconds: float = 8.0
    repeat: int = 1
    seed: int = 7
    catalog: Path = Path()
    deadline_seconds: float = 900.0
    baseline_seconds: float = 45.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"catalog": self.catalog.name}


def run_bench(
    settings: Settings,
    params: BenchParams,
    base_env: Mapping[str, str],
    progress: Callable[[str], None],
) -> dict[str, Any]:
    prices = load_litellm(params.catalog)
    models = traffic.pick_models(prices.entries, params.seed)
    users = traffic.make_users(params.users)
    now = datetime.now(UTC)
    runs: list[dict[str, Any]] = []
    with bench_stack(settings, progress) as stack:
        imported = prepare_template(stack, params.catalog, users, now)
        progress(
            f"template: {len(imported.changes)} prices imported, {params.users} users, "
            f"{len(models)} models in the mix"
        )
        for n in range(params.repeat):
            progress(f"-- run {n + 1} of {params.repeat}")
            tag = f"r{n + 1}{runners.new_tag()}"
            ctx = runners.Context(
                stack, base_env, tag, params.deadline_seconds, params.baseline_seconds, progress
            )
            events = traffic.generate(
                params.events, datetime.now(UTC), models, users, seed=params.seed + n
            )
            progress(
                f"stream: {len(events.lines)} records, {events.unique_valid} unique valid, "
                f"{events.duplicates} redelivered, {events.malformed} malformed, "
                f"{events.late} late"
            )
            finished, published, stages = runners.side_by_side(ctx, events, params.batch_size)

            def make(count: int, index: int, n: int = n) -> traffic.Stream:
                seed = (params.seed + 1000 * (n + 1) + index) & 0xFFFFFFFF
                return traffic.generate(count, datetime.now(UTC), models, users, seed=seed)

            points = sweep.rate_sweep(ctx, params.rates, params.sweep_seconds, make)
            points += sweep.rate_sweep(
                ctx, params.batch_rates, params.sweep_seconds, make, shape="batch"
            )
            runs.append(
                {
                    "repeat": n + 1,
                    "stream": {
                        "records": len(events.lines),
                        "unique_valid": events.unique_valid,
                        "duplicates": events.duplicates,
                        "malformed": events.malformed,
                        "late": events.late,
                        "publish_eps": published.achieved_rate,
                    },
                    "runners": {name: r.as_dict() for name, r in finished.items()},
                    "sweep": [p.as_dict() for p in points],
                    "stages_us_per_event": stages,
                }
            )
        about = machine(stack)
    return {
        "version": 1,
        "machine": about,
        "params": params.as_dict()
        | {
            "topic_partitions": settings.topic_partitions,
            "batch_max_events": settings.batch_max_events,
            "batch_max_wait_ms": settings.batch_max_wait_ms,
        },
        "models": [asdict(m) for m in models],
        "runs": runs,
        "summary": results.summarize(runs),
    }
