"""`usage-pipeline bench stream` end to end, tiny: its own stack, every runner, the
stages, the sweep on both record shapes, the JSON; then `bench plot` into a scratch doc."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.ops.bench import plot

pytestmark = [pytest.mark.integration, pytest.mark.drill]

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    # Transactions of at most 500 events, so that even the batch-record drain of this tiny
    # stream commits more than once and has a commit span to measure.
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "bench", *args],
        env=dict(os.environ, BATCH_MAX_EVENTS="500"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )


def test_tiny_stream_bench_books_exactly_the_unique_valid_events(tmp_path: Path) -> None:
    out = tmp_path / "stream.json"
    done = _cli(
        "stream",
        "--events",
        "2000",
        "--users",
        "30",
        "--rates",
        "max",
        "--batch-rates",
        "max",
        "--batch-size",
        "100",
        "--sweep-seconds",
        "0.2",
        "--baseline-seconds",
        "0",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {"version", "machine", "params", "models", "runs", "summary"} <= set(result)
    [run] = result["runs"]
    assert run["stream"]["records"] == 2000
    assert run["stream"]["duplicates"] == 100 and run["stream"]["malformed"] == 20
    valid = run["stream"]["unique_valid"]
    assert valid == 1880
    runners = run["runners"]
    assert set(runners) == {
        "baseline", "baseline_pool", "pipeline", "pipeline_2w", "pipeline_batch", "copy",
        "bare", "faust_floor",
    }  # fmt: skip
    booking = ("baseline", "baseline_pool", "pipeline", "pipeline_2w", "pipeline_batch", "copy")
    for name in booking:
        r = runners[name]
        assert r["books_exact"] is True, (name, r)
        assert r["events"] == valid and r["complete"] is True, (name, r)
        assert r["throughput_eps"] > 0, (name, r)
    # The same events priced by every runner that books cost the same credits, whatever
    # the record shape or the number of workers.
    assert len({runners[name]["credits"] for name in booking}) == 1
    assert runners["pipeline"]["credits"] > 0
    assert runners["pipeline"]["cpu_seconds"] > 0 and runners["pipeline"]["peak_rss_mib"] > 10
    assert runners["pipeline"]["latency"]["p99_ms"] >= runners["pipeline"]["latency"]["p50_ms"] > 0
    assert runners["bare"]["throughput_eps"] > 0
    assert runners["faust_floor"]["events"] == valid and runners["faust_floor"]["cpu_seconds"] > 0
    stages = run["stages_us_per_event"]
    assert set(stages) == {"decode", "plan", "sql_encoding", "dead_letters", "waiting_on_postgres"}
    assert all(v > 0 for v in stages.values()), stages
    single, batch = run["sweep"]
    for point in (single, batch):
        assert point["offered_eps"] is None and point["workers"] == 1
        assert point["books_exact"] is True and point["events"] == 1880
    assert (single["record_shape"], single["records"]) == ("single", 2000)
    assert batch["record_shape"] == "batch" and batch["records"] < 200
    summary = result["summary"]
    assert {"b/a", "b/a2", "b/c", "b/e", "2w/b", "b2/c", "b/d"} == set(summary["ratios"])
    assert all(v > 0 for v in summary["ratios"].values())
    assert summary["stages_us_per_event"]["faust_dispatch"] > 0
    verdicts = {t["name"]: t["verdict"] for t in summary["targets"]}
    assert verdicts["p99_at_1k"] == "NOT MEASURED"  # no 1,000/s point in this sweep
    assert {verdicts[k] for k in ("own_cpu", "vs_floor", "batch_vs_copy")} <= {"MET", "MISSED"}
    for line in ("(b) pipeline", "(e) Faust floor", "one worker >= 65% of the Faust floor"):
        assert line in done.stdout

    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Bench\n\nprose stays\n\n{plot.BEGIN}\n{plot.END}\n")
    plotted = _cli("plot", "--data", str(out), "--doc", str(doc))
    assert plotted.returncode == 0, plotted.stderr
    assert (tmp_path / plot.THROUGHPUT_PNG).stat().st_size > 1000
    assert (tmp_path / plot.LATENCY_PNG).stat().st_size > 1000
    text = doc.read_text()
    assert text.startswith("# Bench\n\nprose stays\n")
    assert re.search(r"^\| \(b\) pipeline: the worker +\| +[0-9,]+ \|", text, re.M), text


def test_tiny_api_bench_checks_ingests_and_books_every_event_once(tmp_path: Path) -> None:
    out, png = tmp_path / "api.json", tmp_path / "api.png"
    done = _cli(
        "api", "--users", "200", "--clients", "50", "--seconds", "3", "--ingest-seconds", "3",
        "--repeat", "1", "--out", str(out), "--plot", str(png),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {"version", "machine", "params", "runs", "summary"} <= set(result)
    [run] = result["runs"]
    routes = {(s["phase"], s["route"], s["offered_eps"]): s for s in run["series"]}
    assert set(routes) == {
        ("checks", "balance", None), ("checks", "entitlement", None),
        ("ingest", "events", 1000.0), ("ingest", "events", 5000.0),
    }  # fmt: skip
    for key, series in routes.items():
        assert series["requests"] > 0 and series["errors"] == 0, (key, series)
        assert series["p99_ms"] >= series["p50_ms"] > 0, (key, series)
    assert routes[("ingest", "events", 5000.0)]["requests"] == 150  # 3 s of 50 arrays/s
    # vegeta's open loop: 1,000 checks/s offered for 3 s, half of them each route (with 20
    # in flight at most, a loaded machine's latency spikes once held it to 2,803)
    checks = [routes[("checks", r, None)]["requests"] for r in ("balance", "entitlement")]
    assert 2_990 <= sum(checks) <= 3_010 and abs(checks[0] - checks[1]) <= 1, checks
    assert 1 <= run["pool_max_in_use"] <= run["pool_size"]
    books = run["books"]
    # warm-up, the background during the checks and every array answered 202, once each
    assert books["exact"] is True and books["dead_letters"] == 0, books
    assert books["booked"] == books["expected"] > (30 + 150) * 100
    assert run["background"]["publish_eps"] > 0
    verdicts = {t["name"]: t["verdict"] for t in result["summary"]["targets"]}
    assert verdicts["booked_once"] == "MET"
    assert verdicts["balance_p99"] == "NOT MEASURED"  # 50 clients, not 1,000
    assert verdicts["ingest_p99"] in {"MET", "MISSED"}
    for line in ("GET balance, 50 clients", "POST events, 5,000 events/s",
                 "connections in use", "the worker books every event once"):  # fmt: skip
        assert line in done.stdout, line
    assert png.stat().st_size > 1000
