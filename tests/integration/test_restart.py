"""A worker killed with kill -9 and started again books again within seconds, on the
default settings (issue 16, step 0): a killed member holds its partitions until its Kafka
session expires, so the default session (BROKER_SESSION_TIMEOUT) is short, and a worker
given WORKER_INSTANCE_ID rejoins as the same static member and takes them back at once."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.pipeline_harness import Harness, free_port, make_event
from tests.integration.test_pipeline import new_user

pytestmark = pytest.mark.integration

BACK_WITHIN_SECONDS = 15.0
"""From the restart to the next events booked (the issue's bound)."""


@pytest.mark.parametrize("static", [False, True], ids=["dynamic-member", "static-member"])
def test_a_worker_restarted_after_kill_9_books_again_within_seconds(
    new_books: Callable[[], str], kafka_bootstrap: str, tmp_path: Path, static: bool
) -> None:
    h = Harness(new_books(), kafka_bootstrap)
    if static:  # the same member at the same address (Faust checks its web URL on rejoin)
        h.env_overrides["WORKER_INSTANCE_ID"] = f"restart-{h.tag}"
        h.env_overrides["WORKER_WEB_PORT"] = str(free_port())
    user = new_user(h, credits=1_000_000)
    first = [make_event(user) for _ in range(50)]
    h.start_worker(tmp_path)
    try:
        h.publish(first)
        h.wait_booked([e["request_id"] for e in first])
        h.kill_worker(signal.SIGKILL)
        restarted = time.monotonic()
        h.start_worker(tmp_path)
        second = [make_event(user) for _ in range(50)]
        h.publish(second)
        h.wait_booked([e["request_id"] for e in second], timeout=BACK_WITHIN_SECONDS)
        took = time.monotonic() - restarted
    finally:
        h.stop_worker()
    print(f"restarted worker booked again after {took:.1f}s ({'static' if static else 'dynamic'})")
    assert h.booked([e["request_id"] for e in first + second]) == 100
