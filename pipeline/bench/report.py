"""The bench's results: medians over repeats, ratios, targets, and the text tables.

Pure: `summarize` turns the runs' JSON into the summary; `tables` and `markdown` render
it for the terminal and for docs/benchmarks.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.bench import stats

RUNNERS = (
    ("pipeline", "(b) pipeline: the worker"),
    ("baseline", "(a) baseline: per-request transactions"),
    ("copy", "(c) COPY of the same ledger rows"),
    ("bare", "(d) bare aiokafka consumer"),
)
RATIOS = (("b/a", "baseline"), ("b/c", "copy"), ("b/d", "bare"))
Json = dict[str, Any]


def summarize(runs: Sequence[Mapping[str, Any]]) -> Json:
    """Medians over the runs of each runner's figures and each sweep point, the ratios of
    the median throughputs, and the targets."""
    runners: Json = {}
    for name, _ in RUNNERS:
        results = [run["runners"][name] for run in runs if name in run.get("runners", {})]
        if not results:
            continue
        per_1k = [
            {"v": r["cpu_seconds"] * 1e6 / r["events"]}
            if r.get("cpu_seconds") is not None and r.get("events")
            else {}
            for r in results
        ]
        exact = [r.get("books_exact") for r in results]
        runners[name] = {
            "throughput_eps": stats.median_of(results, "throughput_eps"),
            "cpu_seconds": stats.median_of(results, "cpu_seconds"),
            "cpu_ms_per_1k_events": stats.median_of(per_1k, "v"),
            "db_cpu_seconds": stats.median_of(results, "db_cpu_seconds"),
            "peak_rss_mib": stats.median_of(results, "peak_rss_mib"),
            "books_exact": None if all(e is None for e in exact) else all(e for e in exact),
            "runs": len(results),
        }
    pipeline = runners.get("pipeline", {}).get("throughput_eps")
    ratios = {
        label: stats.ratio(pipeline, runners.get(name, {}).get("throughput_eps"))
        for label, name in RATIOS
    }
    sweep = summarize_sweep([run.get("sweep", []) for run in runs])
    at_5k = next((p for p in sweep if p["offered_eps"] == stats.P99_AT_RATE), None)
    targets = stats.evaluate_targets(
        pipeline, at_5k["p99_ms"] if at_5k else None, ratios["b/a"], ratios["b/c"]
    )
    return {
        "runners": runners,
        "ratios": ratios,
        "sweep": sweep,
        "targets": [
            {
                "name": t.name,
                "description": t.description,
                "threshold": t.threshold,
                "value": t.value,
                "verdict": t.verdict,
            }
            for t in targets
        ],
    }


def summarize_sweep(sweeps: Sequence[Sequence[Mapping[str, Any]]]) -> list[Json]:
    """Per offered rate (in the first run's order): medians over the runs."""
    order: list[float | None] = []
    for sweep in sweeps:
        for point in sweep:
            if point["offered_eps"] not in order:
                order.append(point["offered_eps"])
    summary = []
    for offered in order:
        points = [p for sweep in sweeps for p in sweep if p["offered_eps"] == offered]
        latencies = [p["latency"] for p in points]
        summary.append(
            {
                "offered_eps": offered,
                "publish_eps": stats.median_of(points, "publish_eps"),
                "throughput_eps": stats.median_of(points, "throughput_eps"),
                **{k: stats.median_of(latencies, k) for k in ("p50_ms", "p95_ms", "p99_ms")},
                "books_exact": all(p["books_exact"] for p in points),
                "runs": len(points),
            }
        )
    return summary


def _n(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _books(value: bool | None) -> str:
    return {True: "exact", False: "MISMATCH", None: "-"}[value]


def runner_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    header = [
        "runner", "events/s", "b / it", "CPU s", "CPU ms/1k ev", "DB CPU s",
        "peak RSS MiB", "books",
    ]  # fmt: skip
    ratio_of = {name: summary["ratios"][label] for label, name in RATIOS}
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
                _n(r["peak_rss_mib"], 0),
                _books(r["books_exact"]),
            ]
        )
    return rows


def sweep_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    rows = [["offered/s", "published/s", "booked/s", "p50 ms", "p95 ms", "p99 ms", "books"]]
    for p in summary["sweep"]:
        rows.append(
            [
                _n(p["offered_eps"]) if p["offered_eps"] is not None else "max",
                _n(p["publish_eps"]),
                _n(p["throughput_eps"]),
                _n(p["p50_ms"]),
                _n(p["p95_ms"]),
                _n(p["p99_ms"]),
                _books(p["books_exact"]),
            ]
        )
    return rows


def target_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    rows = [["target", "measured", "verdict"]]
    for t in summary["targets"]:
        value = t["value"]
        shown = (
            "-" if value is None
            else f"{value:.2f}x" if t["name"] == "vs_baseline"
            else f"{value:.0%}" if t["name"] == "vs_copy"
            else f"{value:,.0f} ms" if t["name"] == "p99_at_5k"
            else f"{value:,.0f} events/s"
        )  # fmt: skip
        rows.append([t["description"], shown, t["verdict"]])
    return rows


def text_table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def markdown_table(rows: Sequence[Sequence[str]]) -> list[str]:
    align = ["---"] + ["---:"] * (len(rows[0]) - 1)
    return [
        "| " + " | ".join(rows[0]) + " |",
        "| " + " | ".join(align) + " |",
        *("| " + " | ".join(row) + " |" for row in rows[1:]),
    ]


def tables(summary: Mapping[str, Any]) -> list[str]:
    """The three tables for the terminal."""
    return [
        *text_table(runner_rows(summary)),
        "",
        *text_table(sweep_rows(summary)),
        "",
        *text_table(target_rows(summary)),
    ]
