"""`bench api`'s pure parts (figures, medians, targets, tables, bodies) and its load client
against a stand-in aiohttp server on loopback."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from pipeline.ops.bench import api_load, api_results
from pipeline.ops.bench.api_load import LoadPlan
from pipeline.ops.devstack.ports import free_port


def test_route_figures_count_non_2xx_and_exceptions_as_errors() -> None:
    figures = api_results.route_figures(
        [1.0, 2.0, 3.0, 4.0, 100.0], [200, 202, 503, 0, 200], 2.0, {"ClientOSError": 1}
    )
    assert figures["requests"] == 5 and figures["requests_per_s"] == 2.5
    assert figures["errors"] == 2
    assert figures["statuses"] == {"0": 1, "200": 2, "202": 1, "503": 1}
    assert figures["exceptions"] == {"ClientOSError": 1}
    assert figures["p50_ms"] == 3.0 and figures["max_ms"] == 100.0
    assert figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    empty = api_results.route_figures([], [], 0.0)
    assert empty["requests_per_s"] is None and empty["p99_ms"] is None and empty["errors"] == 0


def test_accepted_positions_are_the_events_of_the_arrays_answered_2xx() -> None:
    # 25 events in arrays of 10: the last holds 5; the second was refused.
    assert api_results.accepted_positions([202, 503, 202], 10, 25) == [
        *range(10), *range(20, 25)
    ]  # fmt: skip
    assert api_results.accepted_positions([0], 10, 10) == []


def test_the_pool_metric_is_read_from_the_prometheus_page() -> None:
    registry = CollectorRegistry()
    Gauge(api_results.POOL_METRIC, "most in use", registry=registry).set(7)
    Gauge("other_in_use", "labelled", ["route"], registry=registry).labels("x").set(3)
    page = generate_latest(registry).decode()
    assert api_results.metric_value(page, api_results.POOL_METRIC) == 7.0
    assert api_results.metric_value(page, "other_in_use") is None  # only labelled samples
    assert api_results.metric_value(page, "missing") is None


def _series(phase: str, route: str, offered: float | None, clients: int, p99: float,
            errors: int = 0, rps: float = 100.0) -> dict[str, Any]:  # fmt: skip
    return {
        "phase": phase, "route": route, "offered_eps": offered, "clients": clients,
        "requests": 1000, "requests_per_s": rps, "p50_ms": p99 / 4, "p95_ms": p99 / 2,
        "p99_ms": p99, "max_ms": p99 * 2, "errors": errors, "api_cpu": 0.5, "client_cpu": 0.2,
    }  # fmt: skip


def _run(clients: int, balance_p99: float, ingest_p99: float, errors: int = 0,
         booked_off: int = 0, letters: int = 0) -> dict[str, Any]:  # fmt: skip
    return {
        "series": [
            _series("checks", "balance", None, clients, balance_p99, errors),
            _series("checks", "entitlement", None, clients, balance_p99 + 1),
            _series("ingest", "events", 1000.0, clients, ingest_p99 / 2),
            _series("ingest", "events", 5000.0, clients, ingest_p99),
        ],
        "pool_max_in_use": 5.0,
        "pool_size": 5,
        "background": {"publish_eps": 1000.0, "booked_eps": 990.0, "latency": {"p99_ms": 120.0}},
        "books": {
            "expected": 100,
            "booked": 100 - booked_off,
            "dead_letters": letters,
            "exact": booked_off == 0 and letters == 0,
        },
    }


def _verdicts(summary: dict[str, Any]) -> dict[str, str]:
    return {t["name"]: t["verdict"] for t in summary["targets"]}


def test_summary_takes_medians_of_the_runs_and_sums_their_errors() -> None:
    runs = [_run(1000, 10, 50), _run(1000, 30, 90, errors=2), _run(1000, 18, 200)]
    summary = api_results.summarize(runs)
    balance, entitlement, ingest_1k, ingest_5k = summary["series"]
    assert (balance["route"], balance["p99_ms"], balance["errors"]) == ("balance", 18, 2)
    assert (entitlement["p99_ms"], ingest_1k["offered_eps"], ingest_5k["p99_ms"]) == (19, 1000, 90)
    assert balance["runs"] == 3 and summary["pool_max_in_use"] == 5.0
    assert summary["books"] == {"expected": 300, "booked": 300, "dead_letters": 0, "exact": True}
    assert summary["background"] == {"publish_eps": 1000.0, "booked_eps": 990.0, "p99_ms": 120.0}
    assert _verdicts(summary) == {
        "balance_p99": "MET", "balance_errors": "MISSED", "ingest_p99": "MET",
        "ingest_errors": "MET", "booked_once": "MET",
    }  # fmt: skip


def test_targets_miss_and_are_not_measured_where_the_run_did_not_offer_them() -> None:
    missed = api_results.summarize([_run(1000, 25, 150, booked_off=3, letters=1)])
    assert _verdicts(missed) == {
        "balance_p99": "MISSED", "balance_errors": "MET", "ingest_p99": "MISSED",
        "ingest_errors": "MET", "booked_once": "MISSED",
    }  # fmt: skip
    assert next(t for t in missed["targets"] if t["name"] == "booked_once")["value"] == 4
    tiny = _run(20, 5, 50)
    tiny["series"] = tiny["series"][:3]  # no 5,000 events/s phase
    verdicts = _verdicts(api_results.summarize([tiny]))
    assert verdicts["balance_p99"] == verdicts["ingest_p99"] == "NOT MEASURED"
    assert verdicts["booked_once"] == "MET"


def test_tables_show_each_route_the_pool_the_books_and_the_targets() -> None:
    lines = api_results.tables(api_results.summarize([_run(1000, 12.34, 80)]), 1)
    text = "\n".join(lines)
    for expected in ("GET balance, 1,000 clients", "GET entitlement, 1,000 clients",
                     "POST events, 1,000 events/s", "POST events, 5,000 events/s",
                     "at most 5 of 5 connections", "100 of 100 events booked once",
                     "12.3 ms", "MET"):  # fmt: skip
        assert expected in text, expected


def test_bodies_are_json_arrays_one_a_line(tmp_path: Path) -> None:
    lines = [json.dumps({"n": i}, separators=(",", ":")).encode() for i in range(25)]
    bodies = api_load.arrays(lines, 10)
    assert [len(json.loads(b)) for b in bodies] == [10, 10, 5]
    assert [e["n"] for b in bodies for e in json.loads(b)] == list(range(25))
    path = tmp_path / "bodies"
    api_load.write_bodies(path, bodies)
    assert path.read_bytes().splitlines() == bodies


def test_a_plan_reads_back_as_written(tmp_path: Path) -> None:
    plan = LoadPlan("checks", "http://127.0.0.1:1", "upk_x", 3, 1.5, ("a", "b"), 7, 2.0, 9)
    plan.write(tmp_path / "plan.json")
    assert LoadPlan.read(tmp_path / "plan.json") == plan


TOKEN = "upk_stand-in"
BAD_USER = "00000000-0000-4000-8000-000000000000"


def _stand_in() -> web.Application:
    """Answers like the API: 401 without the token, 500 for BAD_USER, 503 for a body
    that holds "fail"."""

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def check(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({}, status=401)
        if request.match_info["user_id"] == BAD_USER:
            return web.json_response({}, status=500)
        return web.json_response({"allowed": True})

    async def events(request: web.Request) -> web.Response:
        body = await request.read()
        json.loads(body)
        return web.json_response({}, status=503 if b'"fail"' in body else 202)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/users/{user_id}/balance", check)
    app.router.add_get("/v1/users/{user_id}/entitlement", check)
    app.router.add_post("/v1/events", events)
    return app


def _against_stand_in(plan: LoadPlan) -> api_load.Samples:
    async def go() -> api_load.Samples:
        runner = web.AppRunner(_stand_in())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", int(plan.base_url.rsplit(":", 1)[1])).start()
        try:
            return await api_load.run(plan)
        finally:
            await runner.cleanup()

    return asyncio.run(go())


def test_the_closed_loop_alternates_checks_and_records_each_answer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    users = ("11111111-1111-4111-8111-111111111111", BAD_USER)
    plan = LoadPlan("checks", f"http://127.0.0.1:{free_port()}", TOKEN, 4, 0.3, users)
    samples = _against_stand_in(plan)
    assert capsys.readouterr().out == api_load.READY + "\n"
    routes = samples.as_dict()["routes"]
    assert set(routes) == {"balance", "entitlement"}
    counts = [len(routes[r]["status"]) for r in ("balance", "entitlement")]
    assert min(counts) > 10 and abs(counts[0] - counts[1]) <= 4  # half each
    for route in routes.values():
        assert set(route["status"]) == {200, 500}  # random users of the two
        assert len(route["latency_ms"]) == len(route["status"])
        assert all(v > 0 for v in route["latency_ms"])
    assert 0.3 <= samples.seconds < 5


def test_the_open_loop_sends_on_schedule_and_keeps_the_answers_in_body_order(
    tmp_path: Path,
) -> None:
    bodies = [b'[{"n":0}]', b'[{"n":"fail"}]', b'[{"n":2}]', b'[{"n":3}]']
    api_load.write_bodies(tmp_path / "bodies", bodies)
    plan = LoadPlan("ingest", f"http://127.0.0.1:{free_port()}", TOKEN, 2,
                    bodies=str(tmp_path / "bodies"), rate=20.0)  # fmt: skip
    samples = _against_stand_in(plan)
    assert samples.status == {"events": [202, 503, 202, 202]}
    assert samples.seconds >= 3 / 20  # the last body leaves 150 ms after the first
    assert samples.exceptions == {"events": {}}


def test_a_server_that_is_gone_is_an_exception_per_request(tmp_path: Path) -> None:
    api_load.write_bodies(tmp_path / "bodies", [b"[]", b"[]"])
    plan = LoadPlan("ingest", f"http://127.0.0.1:{free_port()}", TOKEN, 2,
                    bodies=str(tmp_path / "bodies"), rate=100.0)  # fmt: skip
    samples = asyncio.run(api_load.run(plan))
    assert samples.status == {"events": [0, 0]}
    assert sum(samples.exceptions["events"].values()) == 2
