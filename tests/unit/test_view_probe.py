"""The bench's live-view probe against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from aiohttp import web

from pipeline.ops.bench.view_probe import ViewProbe
from pipeline.ops.devstack.ports import free_port
from pipeline.ops.devstack.waiting import wait_until


@pytest.fixture
def worker_port() -> Iterator[int]:
    """A stand-in worker: 200 for user `a`, 503 (rebalancing) for `b`, 404 for the rest."""

    async def today(request: web.Request) -> web.Response:
        status = {"a": 200, "b": 503}.get(request.match_info["user"], 404)
        return web.json_response({"requests": 1}, status=status)

    port = free_port()
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_get("/users/{user}/usage/today", today)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield port
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.run_until_complete(runner.cleanup())


def _until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    assert wait_until(condition, seconds, interval=0.01), "the probe made no progress"


def test_the_probe_times_answers_and_counts_refusals(worker_port: int) -> None:
    with ViewProbe(worker_port, ["a", "b"]) as probe:
        _until(lambda: len(probe.latencies_ms) >= 20 and probe.errors >= 2)
    summary = probe.summary()
    assert summary is not None
    assert summary["requests"] == len(probe.latencies_ms) and summary["errors"] == probe.errors
    assert 0 < summary["p50_ms"] <= summary["p99_ms"] <= summary["max_ms"]  # type: ignore[operator]


def test_the_probe_asks_at_its_pace(worker_port: int) -> None:
    with ViewProbe(worker_port, ["a"], rate=50) as probe:
        started = time.monotonic()
        _until(lambda: len(probe.latencies_ms) >= 10)
        took = time.monotonic() - started
    assert took >= 9 / 50  # ten answers at 50 a second take at least nine intervals


def test_a_worker_without_the_view_gives_no_figures(worker_port: int) -> None:
    with ViewProbe(worker_port, ["c"]) as probe:
        _until(lambda: probe.errors >= 3)
    assert probe.summary() is None
