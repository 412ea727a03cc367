"""The bench's pure parts: the generator's shape, percentile math, medians, ratios, targets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.events import Rejection, UsageEvent, decode
from pipeline.money.catalog import CatalogEntry, PriceRow, ProviderRef
from pipeline.ops.bench import measure, results, stats, traffic
from pipeline.ops.devstack.waiting import wait_until

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _entries() -> list[CatalogEntry]:
    cheap = PriceRow(Decimal("0.001"), Decimal("0.002"))
    dear = PriceRow(Decimal("0.5"), Decimal("1.0"))
    out = []
    for provider in ("openai", "anthropic", "google", "mistral", "other"):
        for i in range(12):
            price = dear if i == 0 else cheap
            out.append(
                CatalogEntry(ProviderRef(provider, provider), f"{provider}-m{i}", "x", price)
            )
    return out


MODELS = traffic.pick_models(_entries())
USERS = traffic.make_users(40)


def test_models_are_affordable_popular_and_weighted() -> None:
    assert {m.provider for m in MODELS} == {"openai", "anthropic", "google", "mistral"}
    assert all(not m.model.endswith("-m0") for m in MODELS)  # over the price caps
    assert sum(m.weight for m in MODELS) == pytest.approx(
        sum(traffic.PROVIDER_SHARE[p] for p in ("openai", "anthropic", "google", "mistral"))
    )
    assert traffic.pick_models(_entries()) == MODELS  # seeded


def test_users_are_heavy_tailed_with_every_tier() -> None:
    weights = [u.weight for u in USERS]
    assert weights == sorted(weights, reverse=True)
    assert sum(weights[:4]) > sum(weights[20:])  # a few users send most of the traffic
    assert {u.tier for u in USERS} == {None, "pro", "pro_max", "enterprise_pro", "enterprise_max"}
    assert len({u.id for u in USERS}) == len(USERS)


@pytest.mark.parametrize("count", [100, 1000, 2345])
def test_duplicate_and_malformed_shares_are_exact(count: int) -> None:
    s = traffic.generate(count, NOW, MODELS, USERS, seed=3)
    assert len(s.lines) == len(s.keys) == len(s.request_ids) == count
    assert s.duplicates == round(count * 0.05)
    assert s.malformed == round(count * 0.01)
    assert s.unique_valid == count - s.duplicates - s.malformed
    assert sum(1 for r in s.request_ids if r is None) == s.malformed
    assert len(s.valid_ids()) == s.unique_valid


def test_every_record_decodes_as_its_kind_and_redeliveries_follow_their_original() -> None:
    s = traffic.generate(3000, NOW, MODELS, USERS, seed=11)
    seen: dict[bytes, int] = {}
    late = 0
    for i, (line, request_id) in enumerate(zip(s.lines, s.request_ids, strict=True)):
        decoded = decode(line, NOW, timedelta(minutes=5))
        if request_id is None:
            assert isinstance(decoded, Rejection)
            continue
        assert isinstance(decoded, UsageEvent)
        assert decoded.request_id == request_id
        assert str(decoded.user_id).encode() == s.keys[i]
        if line in seen:
            assert seen[line] < i
        else:
            seen[line] = i
            late += decoded.started_at < NOW - timedelta(minutes=30)
        assert decoded.input_tokens <= traffic.MAX_PROMPT_TOKENS
    assert late == s.late > 0
    assert len(seen) == s.unique_valid


def test_same_seed_same_stream_other_seed_other_ids() -> None:
    a = traffic.generate(500, NOW, MODELS, USERS, seed=5)
    b = traffic.generate(500, NOW, MODELS, USERS, seed=5)
    c = traffic.generate(500, NOW, MODELS, USERS, seed=6)
    assert a.lines == b.lines
    assert not a.valid_ids() & c.valid_ids()


def test_cache_tokens_and_provider_shapes_appear() -> None:
    s = traffic.generate(2000, NOW, MODELS, USERS, seed=1)
    events = [json.loads(x) for x, r in zip(s.lines, s.request_ids, strict=True) if r]
    assert any(e.get("cached_input_tokens") for e in events)
    assert any(e.get("cache_write_tokens") for e in events)
    assert any("prompt_tokens" in e.get("usage", {}) for e in events)
    assert any("cache_read_input_tokens" in e.get("usage", {}) for e in events)


def test_generator_refuses_nothing_to_generate() -> None:
    with pytest.raises(ValueError):
        traffic.generate(0, NOW, MODELS, USERS)


def test_percentiles_interpolate_like_numpy() -> None:
    values = [float(v) for v in range(1, 101)]
    assert stats.percentile(values, 50) == pytest.approx(50.5)
    assert stats.percentile(values, 99) == pytest.approx(99.01)
    assert stats.percentile([7.0], 99) == 7.0
    assert stats.percentile([], 50) is None
    with pytest.raises(ValueError):
        stats.percentile(values, 100)
    summary = stats.latency_summary([10.0, 20.0, 30.0, 40.0])
    assert summary == {
        "p50_ms": 25.0,
        "p95_ms": pytest.approx(38.5),
        "p99_ms": pytest.approx(39.7),
        "max_ms": 40.0,
    }


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=50), st.integers(1, 99))
def test_percentile_lies_between_min_and_max_and_is_monotone(values: list[float], p: int) -> None:
    value = stats.percentile(values, p)
    assert value is not None
    tolerance = 1e-12 * max(1.0, *map(abs, values))  # statistics.quantiles rounds its own way
    assert min(values) - tolerance <= value <= max(values) + tolerance
    higher = stats.percentile(values, min(99, p + 1))
    assert higher is not None and higher >= value - 1e-6


def test_rate_median_ratio_handle_the_unknown() -> None:
    assert stats.rate(100, 4.0) == 25.0
    assert stats.rate(100, 0.0) is None
    assert stats.rate(100, None) is None
    assert stats.median([3.0, None, 1.0, 2.0]) == 2.0
    assert stats.median([None]) is None
    assert stats.median_of([{"x": 1}, {"x": 5}, {"y": 2}, {"x": "n/a"}], "x") == 3.0
    assert stats.ratio(10.0, 4.0) == 2.5
    assert stats.ratio(10.0, 0.0) is None
    assert stats.ratio(None, 4.0) is None


def test_a_target_is_met_missed_or_unmeasured() -> None:
    assert stats.Target("t", "d", 10.0, True, 10.0).verdict == "MET"
    assert stats.Target("t", "d", 10.0, False, 10.5).verdict == "MISSED"
    assert stats.Target("t", "d", 10.0, False, None).verdict == "NOT MEASURED"


def _run(pipeline: float, floor: float, copy: float, p99_at_1k: float) -> dict:
    def runner(eps: float, cpu: float | None = 0.2, db: float | None = 0.05) -> dict:
        return {
            "throughput_eps": eps,
            "events": 1000,
            "cpu_seconds": cpu,
            "db_cpu_seconds": db,
            "peak_rss_mib": 100.0,
            "books_exact": True,
        }

    def point(shape: str, offered: float | None, booked: float, p99: float) -> dict:
        view = {"p50_ms": 1.0, "p99_ms": p99_at_1k / 20} if offered == 1000.0 else None
        return {
            "live_view": view,
            "record_shape": shape,
            "workers": 1,
            "offered_eps": offered,
            "publish_eps": offered or 40_000.0,
            "throughput_eps": booked,
            "booked_share": booked / offered if offered else None,
            "books_exact": True,
            "latency": {"p50_ms": p99 / 4, "p95_ms": p99 / 2, "p99_ms": p99},
        }

    return {
        "runners": {
            "pipeline": runner(pipeline),
            "pipeline_2w": runner(pipeline * 1.6, cpu=0.4),
            "pipeline_batch": runner(copy * 0.6),
            "faust_floor": runner(floor, cpu=0.13, db=None),
            "baseline": runner(600),
            "copy": runner(copy, cpu=None),
        },
        "sweep": [
            point("single", 1000.0, 1000.0, p99_at_1k),
            point("single", 2500.0, 2400.0, 280.0),
            point("single", None, pipeline, 9000.0),
            point("batch", 5000.0, 4990.0, 400.0),
        ],
        "stages_us_per_event": {
            "decode": 8.0, "plan": 20.0, "sql_encoding": 15.0, "dead_letters": 1.0,
            "waiting_on_postgres": 30.0,
        },
    }  # fmt: skip


def test_summary_takes_medians_then_ratios_stages_and_targets() -> None:
    runs = [_run(6000, 8000, 30000, 100), _run(5000, 7000, 25000, 160), _run(7000, 9000, 20000, 90)]
    s = results.summarize(runs)
    r = s["runners"]
    assert r["pipeline"]["throughput_eps"] == 6000
    assert r["pipeline"]["cpu_ms_per_1k_events"] == 200.0
    assert r["pipeline"]["db_cpu_ms_per_1k_events"] == 50.0
    assert r["copy"]["cpu_ms_per_1k_events"] is None
    assert r["faust_floor"]["books_exact"] is True
    assert s["ratios"]["b/e"] == 0.75
    assert s["ratios"]["2w/b"] == pytest.approx(1.6)
    assert s["ratios"]["b2/c"] == pytest.approx(0.6)
    assert s["ratios"]["b/a2"] is None  # no baseline_pool runner in these runs
    stages = s["stages_us_per_event"]
    assert stages["faust_dispatch"] == 130.0 and stages["own_cpu"] == 70.0
    assert stages["rest"] == pytest.approx(200 - 130 - 8 - 20 - 15 - 1)
    [at_1k] = [p for p in s["sweep"] if p["offered_eps"] == 1000.0]
    assert at_1k["p99_ms"] == 100 and at_1k["p99_ms_worst"] == 160
    assert at_1k["view_p99_ms"] == 5.0
    assert [p["record_shape"] for p in s["sweep"]] == ["single", "single", "single", "batch"]
    verdicts = {t["name"]: t["verdict"] for t in s["targets"]}
    assert verdicts == {
        "own_cpu": "MISSED",  # 70 us
        "db_cpu": "MET",
        "vs_floor": "MET",
        "two_workers": "MET",
        "p99_at_1k": "MISSED",  # one run's 160 ms
        "booked_at_2500": "MISSED",  # 96%
        "p99_at_2500": "MET",
        "batch_vs_copy": "MET",
        "batch_booked_at_5k": "MET",
        "batch_p99_at_5k": "MET",
        "view_p99_at_1k": "MET",  # the median run's 5 ms
    }
    lines = results.tables(s)
    assert any("6,000" in line and "pipeline" in line for line in lines)
    assert any(line.startswith("Faust's per-message path") and "130.0" in line for line in lines)


def test_summary_flags_a_books_mismatch() -> None:
    runs = [_run(1, 1, 1, 1), _run(1, 1, 1, 1)]
    runs[1]["runners"]["pipeline"]["books_exact"] = False
    assert results.summarize(runs)["runners"]["pipeline"]["books_exact"] is False


def test_process_probes_see_a_busy_child_and_its_cpu() -> None:
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
    child = subprocess.Popen([sys.executable, "-c", burn + "input()"], stdin=subprocess.PIPE)
    try:
        assert wait_until(lambda: (measure.process_cpu(child.pid) or 0) >= 0.3, 20)
        assert child.pid in measure.children_of(os.getpid())
        tree = measure.tree_cpu(os.getpid(), [child.pid])
        assert tree is not None and tree >= measure.process_cpu(child.pid)  # type: ignore[operator]
    finally:
        child.communicate(b"\n", timeout=20)
    assert measure.process_cpu(child.pid) is None  # reaped: gone
    assert measure.peak_rss_kib(os.getpid()) > 1000  # type: ignore[operator]


def test_proc_parsing() -> None:
    assert measure.parse_vmhwm_kib("Name:\tx\nVmPeak:\t 9 kB\nVmHWM:\t  1234 kB\n") == 1234
    assert measure.parse_vmhwm_kib("Name:\tx\n") is None


def test_interpolation_between_samples() -> None:
    samples = [(10.0, 1.0), (12.0, 3.0), (14.0, 3.0)]
    assert measure.interpolate(samples, 11.0) == 2.0
    assert measure.interpolate(samples, 5.0) == 1.0
    assert measure.interpolate(samples, 20.0) == 3.0
    assert measure.interpolate([], 1.0) is None


def test_figures_block_is_replaced_between_its_markers_only() -> None:
    from pipeline.ops.bench import plot

    doc = f"# Title\n\nprose\n\n{plot.BEGIN}\nold figures\n{plot.END}\n\nmore prose\n"
    new = plot.replace_figures(doc, [plot.BEGIN, "new", plot.END])
    assert new == f"# Title\n\nprose\n\n{plot.BEGIN}\nnew\n{plot.END}\n\nmore prose\n"
    with pytest.raises(plot.PlotError):
        plot.replace_figures("# no markers\n", ["x"])


def test_rates_option() -> None:
    import click

    from pipeline.cli.bench_commands import parse_rates

    assert parse_rates("1000, 2500,max") == [1000.0, 2500.0, None]
    assert parse_rates("") == []
    for bad in ("fast", "-5"):
        with pytest.raises(click.BadParameter):
            parse_rates(bad)
