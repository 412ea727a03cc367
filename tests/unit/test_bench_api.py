"""`bench api`'s pure parts (figures, medians, targets, tables, bodies, vegeta's targets and
results) and vegeta itself against a stand-in aiohttp server on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from pipeline.ops.bench import api_results, vegeta
from pipeline.ops.bench.api_phases import arrays
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


def test_bodies_are_json_arrays_of_consecutive_events() -> None:
    lines = [json.dumps({"n": i}, separators=(",", ":")).encode() for i in range(25)]
    bodies = arrays(lines, 10)
    assert [len(json.loads(b)) for b in bodies] == [10, 10, 5]
    assert [e["n"] for b in bodies for e in json.loads(b)] == list(range(25))


def test_check_targets_alternate_the_routes_over_the_users_with_the_token(tmp_path: Path) -> None:
    path = tmp_path / "targets"
    vegeta.write_check_targets(path, "http://h:1", "upk_t", ["u1", "u2"], 70, 6, seed=3)
    targets = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(targets) == 6
    assert [vegeta.route_of(t["url"]) for t in targets] == ["balance", "entitlement"] * 3
    assert {t["url"].split("/")[5] for t in targets} <= {"u1", "u2"}
    assert targets[1]["url"].endswith("/entitlement?credits=70")
    assert all(t["method"] == "GET" and t["header"] == {"Authorization": ["Bearer upk_t"]}
               for t in targets)  # fmt: skip


def test_ingest_targets_carry_each_body_in_order(tmp_path: Path) -> None:
    path = tmp_path / "targets"
    vegeta.write_ingest_targets(path, "http://h:1", "upk_i", [b"[1]", b"[2,3]"])
    targets = [json.loads(line) for line in path.read_text().splitlines()]
    assert [base64.b64decode(t["body"]) for t in targets] == [b"[1]", b"[2,3]"]
    assert targets[0]["url"] == "http://h:1/v1/events"
    assert targets[0]["header"]["Content-Type"] == ["application/json"]


def test_an_attack_runs_for_its_seconds_or_until_its_targets_run_out(tmp_path: Path) -> None:
    timed = vegeta.Attack(tmp_path / "t", 2.5, 1000, seconds=20).command(Path("v"), Path("o"))
    assert "-duration=20s" in timed and "-lazy" not in timed
    assert "-rate=2500/1000s" in timed and "-max-workers=1000" in timed
    assert "-max-body=0" in timed  # answers not kept
    once = vegeta.Attack(tmp_path / "t", 50, 10, keep_bodies=True).command(Path("v"), Path("o"))
    assert "-lazy" in once and not any(a.startswith("-duration") for a in once)
    assert "-max-body=-1" in once


def _result(url: str, code: int, latency_ns: int, at: str, error: str = "",
            body: bytes | None = None) -> str:  # fmt: skip
    return json.dumps({
        "attack": "", "seq": 0, "code": code, "timestamp": at, "latency": latency_ns,
        "bytes_out": 0, "bytes_in": 0, "error": error, "method": "GET", "url": url,
        "body": base64.b64encode(body).decode() if body is not None else None,
    })  # fmt: skip


def test_results_split_by_route_with_failures_counted_by_kind() -> None:
    lines = [
        _result("http://h/v1/users/u/balance", 200, 2_000_000, "2026-12-07T10:00:00.000000001Z"),
        _result("http://h/v1/users/u/entitlement?credits=5", 500, 1_500_000,
                "2026-12-07T10:00:00.25+00:00"),
        _result("http://h/v1/users/u/balance", 0, 3_000_000, "2026-12-07T10:00:00.5Z",
                'Get "http://h/v1/users/u/balance": dial tcp 127.0.0.1:1: connect: '
                "connection refused"),
        _result("", 0, 0, "2026-12-07T10:00:00.6Z", vegeta.NO_TARGETS),  # not a request
    ]  # fmt: skip
    samples = vegeta.parse(lines)
    assert samples.status == {"balance": [200, 0], "entitlement": [500]}
    assert samples.latency_ms == {"balance": [2.0, 3.0], "entitlement": [1.5]}
    assert samples.exceptions["balance"] == {"connection refused": 1}
    assert samples.seconds == pytest.approx(0.503, abs=1e-6)


def test_accepted_request_ids_come_from_the_answers_bodies() -> None:
    answer = {"results": [
        {"index": 0, "request_id": "a", "status": "accepted"},
        {"index": 1, "status": "rejected", "reason": "invalid_schema"},
        {"index": 2, "request_id": "c", "status": "not_published"},
    ]}  # fmt: skip
    problem = b'{"type": "about:blank", "status": 503}'
    assert vegeta.accepted_request_ids([json.dumps(answer).encode(), problem, b""]) == {"a"}


TOKEN = "upk_stand-in"
BAD_USER = "00000000-0000-4000-8000-000000000000"


def _stand_in() -> web.Application:
    """Answers like the API: 401 without the token, 500 for BAD_USER; an array of events is
    answered 503 if it holds "fail", else 202 with each event accepted."""

    async def check(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({}, status=401)
        if request.match_info["user_id"] == BAD_USER:
            return web.json_response({}, status=500)
        return web.json_response({"allowed": True})

    async def events(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({}, status=401)
        items = json.loads(await request.read())
        if "fail" in items:
            return web.json_response({}, status=503)
        answers = [{"index": i, "request_id": str(item), "status": "accepted"}
                   for i, item in enumerate(items)]  # fmt: skip
        return web.json_response({"results": answers}, status=202)

    app = web.Application()
    app.router.add_get("/v1/users/{user_id}/balance", check)
    app.router.add_get("/v1/users/{user_id}/entitlement", check)
    app.router.add_post("/v1/events", events)
    return app


@pytest.fixture(scope="module")
def stand_in() -> Iterator[str]:
    """The stand-in served from a thread of its own; its base URL."""
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(_stand_in())
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def _attack(attack: vegeta.Attack, out: Path) -> vegeta.Samples:
    import subprocess

    binary = vegeta.binary()
    subprocess.run(attack.command(binary, out), check=True, timeout=60)
    return vegeta.samples(binary, out)


def test_vegeta_checks_each_route_and_records_each_answer(stand_in: str, tmp_path: Path) -> None:
    users = ["11111111-1111-4111-8111-111111111111", BAD_USER]
    targets = tmp_path / "targets"
    vegeta.write_check_targets(targets, stand_in, TOKEN, users, 5, 40, seed=1)
    samples = _attack(vegeta.Attack(targets, 40, 4, seconds=1), tmp_path / "out")
    counts = [len(samples.status[r]) for r in vegeta.CHECK_ROUTES]
    assert sum(counts) == 40 and abs(counts[0] - counts[1]) <= 1  # 40/s for 1 s, half each
    for route in vegeta.CHECK_ROUTES:
        assert set(samples.status[route]) == {200, 500}  # random users of the two
        assert all(v > 0 for v in samples.latency_ms[route])
    assert 0.9 <= samples.seconds < 5


def test_vegeta_sends_each_body_once_and_keeps_the_answers(stand_in: str, tmp_path: Path) -> None:
    bodies = [b'["a","b"]', b'["fail"]', b'["c"]', b'["d"]']
    targets = tmp_path / "targets"
    vegeta.write_ingest_targets(targets, stand_in, TOKEN, bodies)
    samples = _attack(vegeta.Attack(targets, 20, 2, keep_bodies=True), tmp_path / "out")
    assert sorted(samples.status["events"]) == [202, 202, 202, 503]
    assert samples.seconds >= 3 / 20  # the last body leaves 150 ms after the first
    assert vegeta.accepted_request_ids(samples.bodies["events"]) == {"a", "b", "c", "d"}


def test_a_server_that_is_gone_is_a_failure_per_request(tmp_path: Path) -> None:
    targets = tmp_path / "targets"
    vegeta.write_ingest_targets(targets, f"http://127.0.0.1:{free_port()}", TOKEN, [b"[]"] * 2)
    samples = _attack(vegeta.Attack(targets, 100, 2), tmp_path / "out")
    assert samples.status == {"events": [0, 0]}
    assert samples.exceptions["events"] == {"connection refused": 2}
