"""The bench's results: medians over repeats, ratios, targets, and the text tables.

Pure: `summarize` turns the runs' JSON into the summary; `tables` and `markdown` render
it for the terminal and for docs/benchmarks.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pipeline import tables as rendering
from pipeline.ops.bench import stats

RUNNERS = (
    ("pipeline", "(b) pipeline: the worker"),
    ("pipeline_2w", "(b) two workers, one group"),
    ("pipeline_batch", "(b2) the worker on batch records"),
    ("faust_floor", "(e) Faust floor: read, no booking"),
    ("baseline", "(a) baseline: per-request transactions"),
    ("baseline_pool", "(a2) baseline, pool of 20 in flight"),
    ("copy", "(c) COPY of the same ledger rows"),
    ("bare", "(d) bare aiokafka consumer"),
)
RATIOS = (
    ("b/a", "pipeline", "baseline"),
    ("b/a2", "pipeline", "baseline_pool"),
    ("b/c", "pipeline", "copy"),
    ("b/e", "pipeline", "faust_floor"),
    ("2w/b", "pipeline_2w", "pipeline"),
    ("b2/c", "pipeline_batch", "copy"),
    ("b/d", "pipeline", "bare"),
)
STAGES = (
    ("faust_dispatch", "Faust's per-message path (runner e's CPU)"),
    ("decode", "decode records into events"),
    ("plan", "plan: price, dedupe, deduct, rows"),
    ("sql_encoding", "SQL and COPY: psycopg, encoding"),
    ("dead_letters", "dead letters before the commit"),
    ("rest", "the rest (agent, metrics, logs, GC)"),
    ("waiting_on_postgres", "waiting on PostgreSQL (wall, not CPU)"),
)
Json = dict[str, Any]


def _per_1k(results: Sequence[Mapping[str, Any]], key: str) -> float | None:
    values = [
        {"v": r[key] * 1e6 / r["events"]} if r.get(key) is not None and r.get("events") else {}
        for r in results
    ]
    return stats.median_of(values, "v")


def summarize(runs: Sequence[Mapping[str, Any]]) -> Json:
    """Medians over the runs of each runner's figures, each sweep point and each booking
    stage, the ratios of the median throughputs, and the targets."""
    runners: Json = {}
    for name, _ in RUNNERS:
        results = [run["runners"][name] for run in runs if name in run.get("runners", {})]
        if not results:
            continue
        exact = [r.get("books_exact") for r in results]
        runners[name] = {
            "throughput_eps": stats.median_of(results, "throughput_eps"),
            "cpu_seconds": stats.median_of(results, "cpu_seconds"),
            "cpu_ms_per_1k_events": _per_1k(results, "cpu_seconds"),
            "db_cpu_seconds": stats.median_of(results, "db_cpu_seconds"),
            "db_cpu_ms_per_1k_events": _per_1k(results, "db_cpu_seconds"),
            "peak_rss_mib": stats.median_of(results, "peak_rss_mib"),
            "events_per_transaction": stats.median_of(results, "events_per_transaction"),
            "books_exact": None if all(e is None for e in exact) else all(e for e in exact),
            "runs": len(results),
        }

    def eps(name: str) -> float | None:
        value: float | None = runners.get(name, {}).get("throughput_eps")
        return value

    ratios = {label: stats.ratio(eps(top), eps(bottom)) for label, top, bottom in RATIOS}
    sweep = summarize_sweep([run.get("sweep", []) for run in runs])
    stages = summarize_stages(runs, runners)
    return {
        "runners": runners,
        "ratios": ratios,
        "sweep": sweep,
        "stages_us_per_event": stages,
        "targets": [
            {
                "name": t.name,
                "description": t.description,
                "threshold": t.threshold,
                "value": t.value,
                "verdict": t.verdict,
            }
            for t in targets(runners, ratios, sweep, stages)
        ],
    }


def summarize_stages(runs: Sequence[Mapping[str, Any]], runners: Json) -> Json:
    """Medians of the in-process stages; Faust's part is runner (e)'s CPU per event and
    the rest is what the worker spent beyond Faust and the measured stages."""
    measured = [run.get("stages_us_per_event") or {} for run in runs]
    stages: Json = {name: stats.median_of(measured, name) for name, _ in STAGES}
    stages["faust_dispatch"] = runners.get("faust_floor", {}).get("cpu_ms_per_1k_events")
    worker = runners.get("pipeline", {}).get("cpu_ms_per_1k_events")
    parts = [stages[k] for k in ("faust_dispatch", "decode", "plan", "sql_encoding")]
    parts.append(stages["dead_letters"])
    stages["rest"] = (
        worker - sum(p for p in parts if p is not None)
        if worker is not None and None not in parts
        else None
    )
    stages["worker_cpu"] = worker
    stages["own_cpu"] = (
        worker - stages["faust_dispatch"]
        if worker is not None and stages["faust_dispatch"] is not None
        else None
    )
    return stages


def summarize_sweep(sweeps: Sequence[Sequence[Mapping[str, Any]]]) -> list[Json]:
    """Per (record shape, workers, offered rate), in the first run's order: medians over
    the runs, and the worst p99 of any run."""
    order: list[tuple[str, int, float | None]] = []
    for sweep in sweeps:
        for point in sweep:
            key = _point_key(point)
            if key not in order:
                order.append(key)
    summary = []
    for shape, workers, offered in order:
        points = [
            p for sweep in sweeps for p in sweep if _point_key(p) == (shape, workers, offered)
        ]
        latencies = [p["latency"] for p in points]
        views = [p["live_view"] for p in points if p.get("live_view")]
        worst = [x.get("p99_ms") for x in latencies if x.get("p99_ms") is not None]
        summary.append(
            {
                "record_shape": shape,
                "workers": workers,
                "offered_eps": offered,
                "publish_eps": stats.median_of(points, "publish_eps"),
                "throughput_eps": stats.median_of(points, "throughput_eps"),
                **{k: stats.median_of(latencies, k) for k in ("p50_ms", "p95_ms", "p99_ms")},
                "p99_ms_worst": max(worst) if worst else None,
                "booked_share": stats.median_of(points, "booked_share"),
                "books_exact": all(p["books_exact"] for p in points),
                "runs": len(points),
                **({"view_p99_ms": stats.median_of(views, "p99_ms")} if views else {}),
            }
        )
    return summary


def _point_key(point: Mapping[str, Any]) -> tuple[str, int, float | None]:
    return point.get("record_shape", "single"), point.get("workers", 1), point["offered_eps"]


def _sweep_point(
    sweep: Sequence[Mapping[str, Any]], shape: str, offered: float
) -> Mapping[str, Any]:
    for point in sweep:
        if _point_key(point) == (shape, 1, offered):
            return point
    return {}


def targets(runners: Json, ratios: Json, sweep: list[Json], stages: Json) -> list[stats.Target]:
    """The hot-path issue's targets against the medians (the p99 at 1,000/s: every run)."""
    T = stats.Target
    db = runners.get("pipeline", {}).get("db_cpu_ms_per_1k_events")
    at_1k = _sweep_point(sweep, "single", 1000)
    at_2500 = _sweep_point(sweep, "single", 2500)
    batch_5k = _sweep_point(sweep, "batch", 5000)
    return [
        T("own_cpu", "our CPU per event (worker - Faust floor) <= 50 us", 50, False,
          stages.get("own_cpu")),
        T("db_cpu", "PostgreSQL CPU per event <= 80 us", 80, False, db),
        T("vs_floor", "one worker >= 65% of the Faust floor", 0.65, True, ratios.get("b/e")),
        T("two_workers", "two workers >= 1.5x one worker", 1.5, True, ratios.get("2w/b")),
        T("p99_at_1k", "1,000/s offered: p99 <= 150 ms in every run", 150, False,
          at_1k.get("p99_ms_worst")),
        T("booked_at_2500", "2,500/s offered: >= 97% booked", 0.97, True,
          at_2500.get("booked_share")),
        T("p99_at_2500", "2,500/s offered: p99 <= 300 ms", 300, False, at_2500.get("p99_ms")),
        T("batch_vs_copy", "batch records: drain >= 50% of COPY", 0.5, True,
          ratios.get("b2/c")),
        T("batch_booked_at_5k", "batch records, 5,000/s offered: >= 97% booked", 0.97, True,
          batch_5k.get("booked_share")),
        T("batch_p99_at_5k", "batch records, 5,000/s offered: p99 <= 500 ms", 500, False,
          batch_5k.get("p99_ms")),
        T("view_p99_at_1k", "live view at 1,000/s offered: /usage/today p99 <= 5 ms", 5, False,
          at_1k.get("view_p99_ms")),
    ]  # fmt: skip


def _n(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _books(value: bool | None) -> str:
    return {True: "exact", False: "MISMATCH", None: "-"}[value]


def runner_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    header = [
        "runner", "events/s", "b / it", "CPU s", "CPU us/ev", "DB CPU s", "DB us/ev",
        "events/tx", "peak RSS MiB", "books",
    ]  # fmt: skip
    ratio_of = {
        bottom: summary["ratios"][label] for label, top, bottom in RATIOS if top == "pipeline"
    }
    rows = [header]
    for name, label in RUNNERS:
        r = summary["runners"].get(name)
        if r is None:
            continue
        rows.append(
            [
                label,
                _n(r["throughput_eps"]),
                _x(ratio_of.get(name)) if name != "pipeline" else "",
                _n(r["cpu_seconds"], 1),
                _n(r["cpu_ms_per_1k_events"], 0),
                _n(r["db_cpu_seconds"], 1),
                _n(r.get("db_cpu_ms_per_1k_events"), 0),
                _n(r.get("events_per_transaction"), 0),
                _n(r["peak_rss_mib"], 0),
                _books(r["books_exact"]),
            ]
        )
    return rows


def sweep_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    rows = [
        ["records", "workers", "offered/s", "published/s", "booked/s", "kept up", "p50 ms",
         "p95 ms", "p99 ms", "worst p99", "books"]
    ]  # fmt: skip
    for p in summary["sweep"]:
        rows.append(
            [
                p.get("record_shape", "single"),
                str(p.get("workers", 1)),
                _n(p["offered_eps"]) if p["offered_eps"] is not None else "max",
                _n(p["publish_eps"]),
                _n(p["throughput_eps"]),
                "-" if p.get("booked_share") is None else f"{p['booked_share']:.0%}",
                _n(p["p50_ms"]),
                _n(p["p95_ms"]),
                _n(p["p99_ms"]),
                _n(p.get("p99_ms_worst")),
                _books(p["books_exact"]),
            ]
        )
    return rows


def stage_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    stages = summary.get("stages_us_per_event", {})
    rows = [["stage (one worker, single-event records)", "us per event"]]
    rows += [[label, _n(stages.get(name), 1)] for name, label in STAGES]
    rows.append(["worker CPU in all (runner b)", _n(stages.get("worker_cpu"), 1)])
    return rows


_PERCENT = {"vs_floor", "booked_at_2500", "batch_vs_copy", "batch_booked_at_5k"}


def target_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    rows = [["target", "measured", "verdict"]]
    for t in summary["targets"]:
        value, name = t["value"], t["name"]
        shown = (
            "-" if value is None
            else f"{value:.0%}" if name in _PERCENT
            else f"{value:.2f}x" if name == "two_workers"
            else f"{value:,.0f} ms" if "p99" in name
            else f"{value:,.1f} us"
        )  # fmt: skip
        rows.append([t["description"], shown, t["verdict"]])
    return rows


def text_table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Header row first, as the `*_rows` functions give them."""
    return rendering.text(rows[0], rows[1:]).splitlines()


def markdown_table(rows: Sequence[Sequence[str]]) -> list[str]:
    return rendering.markdown(rows[0], rows[1:]).splitlines()


def tables(summary: Mapping[str, Any]) -> list[str]:
    """The four tables for the terminal."""
    return [
        *text_table(runner_rows(summary)),
        "",
        *text_table(stage_rows(summary)),
        "",
        *text_table(sweep_rows(summary)),
        "",
        *text_table(target_rows(summary)),
    ]
