"""A `python -m pipeline api` subprocess, the way the bench and the tests run one: started
with its environment and log file, then waited for until a route answers 200. It stops
like any of our processes (`worker_process.stop_worker`: SIGTERM, then SIGKILL)."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.ops.devstack.waiting import wait_until

API_COMMAND = (sys.executable, "-m", "pipeline", "api")


class ApiNotUp(RuntimeError):
    """The API exited, or did not answer in time; the message ends with its log's tail."""


def start_api(env: Mapping[str, str], log: Path, **popen: Any) -> subprocess.Popen[bytes]:
    """The API with `env`, its output appended to `log`; `popen` adds Popen options."""
    with log.open("ab") as out:
        return subprocess.Popen(
            API_COMMAND, env=dict(env), stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, **popen,
        )  # fmt: skip


def wait_answering(
    process: subprocess.Popen[bytes], url: str, log: Path, timeout: float, path: str = "/healthz"
) -> None:
    """Wait until GET `url` + `path` answers 200 (/readyz: PostgreSQL and Kafka reachable)."""

    def answering() -> bool:
        if process.poll() is not None:
            raise ApiNotUp(f"the API exited with {process.returncode}: {_tail(log)}")
        try:
            with urllib.request.urlopen(url + path, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    if not wait_until(answering, timeout, 0.2):
        raise ApiNotUp(f"the API did not answer {path} in {timeout:.0f}s: {_tail(log)}")


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"
