"""`usage-pipeline bench stream` end to end, tiny: its own stack, all four runners, the
sweep, the JSON; then `bench plot` into a scratch doc."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.bench import plot

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "bench", *args],
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
    assert set(runners) == {"baseline", "pipeline", "copy", "bare"}
    for name in ("baseline", "pipeline", "copy"):
        r = runners[name]
        assert r["books_exact"] is True, (name, r)
        assert r["events"] == valid and r["complete"] is True, (name, r)
        assert r["throughput_eps"] > 0, (name, r)
    # The same events priced by the baseline and by the pipeline cost the same credits.
    assert (
        runners["baseline"]["credits"]
        == runners["pipeline"]["credits"]
        == runners["copy"]["credits"]
        > 0
    )
    assert runners["pipeline"]["cpu_seconds"] > 0 and runners["pipeline"]["peak_rss_mib"] > 10
    assert runners["pipeline"]["latency"]["p99_ms"] >= runners["pipeline"]["latency"]["p50_ms"] > 0
    assert runners["bare"]["throughput_eps"] > 0
    [point] = run["sweep"]
    assert point["offered_eps"] is None and point["records"] == 2000
    assert point["books_exact"] is True and point["events"] == 1880
    summary = result["summary"]
    assert set(summary["ratios"]) == {"b/a", "b/c", "b/d"}
    assert all(v > 0 for v in summary["ratios"].values())
    verdicts = {t["name"]: t["verdict"] for t in summary["targets"]}
    assert verdicts["p99_at_5k"] == "NOT MEASURED"  # no 5,000/s point in this sweep
    assert {verdicts[k] for k in ("sustained", "vs_baseline", "vs_copy")} <= {"MET", "MISSED"}
    for line in ("(b) pipeline", ">= 20,000 events/s sustained", "wrote"):
        assert line in done.stdout

    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Bench\n\nprose stays\n\n{plot.BEGIN}\n{plot.END}\n")
    plotted = _cli("plot", "--data", str(out), "--doc", str(doc))
    assert plotted.returncode == 0, plotted.stderr
    assert (tmp_path / plot.THROUGHPUT_PNG).stat().st_size > 1000
    assert (tmp_path / plot.LATENCY_PNG).stat().st_size > 1000
    text = doc.read_text()
    assert text.startswith("# Bench\n\nprose stays\n") and "| (b) pipeline: the worker |" in text
