"""The live view's latency under load: one gateway-like client asking the worker for its
users' usage of today (`GET /users/{id}/usage/today`, keep-alive, one request at a time,
RATE a second) while a sweep point is booked, from a thread of its own.

The pace is a gateway's, not a flood: asked back to back, the worker's web server took
28% of its CPU from the booking at 5,000 events/s and the point measured the probe."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Sequence
from types import TracebackType

import aiohttp

from pipeline.ops.bench import stats

RATE = 100.0
"""Requests a second."""


class ViewProbe:
    """`with ViewProbe(port, users) as probe: ...`; then `probe.summary()`."""

    def __init__(self, port: int, users: Sequence[str], rate: float = RATE) -> None:
        self.interval = 1 / rate
        self.urls = [f"http://127.0.0.1:{port}/users/{user}/usage/today" for user in users]
        self.latencies_ms: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._ask()), daemon=True)

    def __enter__(self) -> ViewProbe:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    async def _ask(self) -> None:
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            due = time.perf_counter()
            for url in itertools.cycle(self.urls):
                if self._stop.is_set():
                    return
                started = time.perf_counter()
                due = max(due, started) + self.interval  # no burst to catch up after a stall
                try:
                    async with session.get(url) as response:
                        await response.read()
                        ok = response.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                if ok:
                    self.latencies_ms.append((time.perf_counter() - started) * 1000)
                else:
                    self.errors += 1
                await asyncio.sleep(max(0.0, due - time.perf_counter()))

    def summary(self) -> dict[str, float | None] | None:
        """p50/p95/p99/max in ms, requests answered and errors; None if none was answered
        (the worker runs without the view)."""
        if not self.latencies_ms:
            return None
        answered = float(len(self.latencies_ms))
        return {
            **stats.latency_summary(self.latencies_ms),
            "requests": answered,
            "errors": float(self.errors),
        }
