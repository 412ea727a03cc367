"""`bench api`'s figures: per route and phase from the load client's samples, medians over
the repeats, the gateway API issue's targets, and the text tables.

Pure, like `results` for `bench stream`, whose percentile and median helpers (`stats`)
and table rendering these use. A series is one route in one phase: the balance and
entitlement checks of the closed loop, and POST /v1/events at each offered rate.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from pipeline.ops.bench import stats
from pipeline.ops.bench.results import text_table

Json = dict[str, Any]
POOL_METRIC = "usage_api_db_connections_max_in_use"
TARGET_CLIENTS = 1_000
TARGET_INGEST_EPS = 5_000
FIGURES = ("requests_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms", "api_cpu", "client_cpu")


def is_error(status: int) -> bool:
    """Not a 2xx answer (0: the request raised)."""
    return not 200 <= status < 300


def route_figures(
    latency_ms: Sequence[float],
    status: Sequence[int],
    seconds: float,
    exceptions: Mapping[str, int] | None = None,
) -> Json:
    """Requests, requests/s, the latency percentiles and the errors of one route's samples."""
    counted = Counter(status)
    return {
        "requests": len(status),
        "requests_per_s": stats.rate(len(status), seconds),
        **stats.latency_summary(latency_ms),
        "errors": sum(n for code, n in counted.items() if is_error(code)),
        "statuses": {str(code): counted[code] for code in sorted(counted)},
        "exceptions": dict(exceptions or {}),
    }


def phase_series(
    samples: Mapping[str, Any], phase: str, offered_eps: float | None, clients: int
) -> list[Json]:
    """One series per route of a phase's samples (`vegeta.Samples.as_dict()`)."""
    return [
        {
            "phase": phase,
            "route": route,
            "offered_eps": offered_eps,
            "clients": clients,
            **route_figures(
                data["latency_ms"], data["status"], samples["seconds"], data.get("exceptions")
            ),
        }
        for route, data in samples["routes"].items()
    ]


def metric_value(text: str, name: str) -> float | None:
    """The value of the unlabelled sample `name` in a Prometheus text page."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return float(sample.value)
    return None


def series_key(series: Mapping[str, Any]) -> tuple[str, str, float | None]:
    return series["phase"], series["route"], series["offered_eps"]


def label(series: Mapping[str, Any]) -> str:
    if series["phase"] == "checks":
        return f"GET {series['route']}, {series['clients']:,} clients"
    return f"POST {series['route']}, {series['offered_eps']:,.0f} events/s"


def summarize(runs: Sequence[Mapping[str, Any]]) -> Json:
    """Per series (in the first run's order): medians over the runs, errors summed over
    them; the pool's most connections in use (median); the books; the targets."""
    order: list[tuple[str, str, float | None]] = []
    for run in runs:
        order += [k for k in map(series_key, run["series"]) if k not in order]
    series = []
    for key in order:
        found = [s for run in runs for s in run["series"] if series_key(s) == key]
        series.append(
            {
                "phase": key[0],
                "route": key[1],
                "offered_eps": key[2],
                "clients": found[0]["clients"],
                "requests": stats.median_of(found, "requests"),
                **{name: stats.median_of(found, name) for name in FIGURES},
                "errors": sum(int(s["errors"]) for s in found),
                "runs": len(found),
            }
        )
    books = [run["books"] for run in runs]
    background = [run["background"] for run in runs]
    summary: Json = {
        "series": series,
        "pool_max_in_use": stats.median_of(runs, "pool_max_in_use"),
        "pool_size": runs[0]["pool_size"] if runs else None,
        "background": {
            "publish_eps": stats.median_of(background, "publish_eps"),
            "booked_eps": stats.median_of(background, "booked_eps"),
            "p99_ms": stats.median_of([b["latency"] for b in background], "p99_ms"),
        },
        "books": {
            "expected": sum(b["expected"] for b in books),
            "booked": sum(b["booked"] for b in books),
            "dead_letters": sum(b["dead_letters"] for b in books),
            "exact": bool(books) and all(b["exact"] for b in books),
        },
    }
    summary["targets"] = [
        {"name": t.name, "description": t.description, "threshold": t.threshold,
         "value": t.value, "verdict": t.verdict}
        for t in targets(summary)
    ]  # fmt: skip
    return summary


def _find(summary: Mapping[str, Any], key: tuple[str, str, float | None]) -> Mapping[str, Any]:
    return next((s for s in summary["series"] if series_key(s) == key), {})


def targets(summary: Mapping[str, Any]) -> list[stats.Target]:
    """The issue's targets. A target whose condition the run did not offer (fewer than
    1,000 clients, no 5,000 events/s phase) is not measured."""
    T = stats.Target
    balance = _find(summary, ("checks", "balance", None))
    if balance.get("clients", 0) < TARGET_CLIENTS:
        balance = {}
    ingest = _find(summary, ("ingest", "events", float(TARGET_INGEST_EPS)))
    books = summary["books"]
    off = books["expected"] - books["booked"] + books["dead_letters"]
    return [
        T("balance_p99", "balance check p99 <= 20 ms at 1,000 concurrent clients", 20, False,
          balance.get("p99_ms")),
        T("balance_errors", "balance checks at 1,000 concurrent clients: 0 errors", 0, False,
          balance.get("errors")),
        T("ingest_p99", "ingest of 5,000 events/s: p99 <= 100 ms per array", 100, False,
          ingest.get("p99_ms")),
        T("ingest_errors", "ingest of 5,000 events/s: 0 errors", 0, False,
          ingest.get("errors")),
        T("booked_once", "the worker books every event once (events off, DLQ records)", 0,
          False, off if books["expected"] else None),
    ]  # fmt: skip


def _n(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def series_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    rows = [["route (phase)", "requests", "requests/s", "p50 ms", "p95 ms", "p99 ms",
             "max ms", "errors", "API CPU", "client CPU"]]  # fmt: skip
    for s in summary["series"]:
        rows.append(
            [label(s), _n(s["requests"]), _n(s["requests_per_s"]), _n(s["p50_ms"], 1),
             _n(s["p95_ms"], 1), _n(s["p99_ms"], 1), _n(s["max_ms"], 1), str(s["errors"]),
             _share(s["api_cpu"]), _share(s["client_cpu"])]
        )  # fmt: skip
    return rows


def target_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    rows = [["target", "measured", "verdict"]]
    for t in summary["targets"]:
        value = t["value"]
        shown = (
            "-" if value is None
            else f"{value:,.1f} ms" if t["name"].endswith("_p99")
            else f"{value:,.0f}"
        )  # fmt: skip
        rows.append([t["description"], shown, t["verdict"]])
    return rows


def tables(summary: Mapping[str, Any], runs: int) -> list[str]:
    """The figures, the pool, the background and the books, then the targets."""
    books, pool, background = summary["books"], summary["pool_max_in_use"], summary["background"]
    return [
        f"medians of {runs} run{'s' if runs != 1 else ''}; errors: non-2xx answers and "
        "exceptions, summed over the runs; CPU: share of one core during the phase",
        *text_table(series_rows(summary)),
        "",
        f"PostgreSQL pool: at most {_n(pool)} of {summary['pool_size']} connections in use "
        f"({POOL_METRIC})",
        f"background during the checks: published {_n(background['publish_eps'])} events/s, "
        f"booked {_n(background['booked_eps'])}/s, publish to commit p99 "
        f"{_n(background['p99_ms'])} ms",
        f"books: {books['booked']:,} of {books['expected']:,} events booked once, "
        f"{books['dead_letters']:,} dead letters: {'exact' if books['exact'] else 'MISMATCH'}",
        "",
        *text_table(target_rows(summary)),
    ]
