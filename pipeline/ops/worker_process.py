"""A `python -m pipeline worker` subprocess, the way every operator tool and test runs one:
started with its environment and log file, killed, or stopped (SIGTERM, then SIGKILL once
a grace period has passed), and the batch retries it logged read back from that file."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.stream.booker import LoggedRetry, logged_retries

WORKER_COMMAND = (sys.executable, "-m", "pipeline", "worker", "--loglevel", "warning")


def start_worker(env: Mapping[str, str], log: Path, **popen: Any) -> subprocess.Popen[bytes]:
    """The worker with `env`, its output appended to `log`; `popen` adds Popen options."""
    with log.open("ab") as out:
        return subprocess.Popen(
            WORKER_COMMAND, env=dict(env), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            **popen,
        )  # fmt: skip


def kill_worker(process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> int:
    """Send `sig` (kill -9 by default) and wait for the exit; returns its code."""
    if process.poll() is None:
        process.send_signal(sig)
    return process.wait(60)


def stop_worker(process: subprocess.Popen[bytes], grace: float = 30.0) -> int:
    """SIGTERM, and SIGKILL if it has not exited within `grace` seconds; returns its code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait(60)


def retries_since(log: Path, offset: int = 0) -> list[LoggedRetry]:
    """The batch retries the worker logged to `log` after its first `offset` bytes."""
    if not log.is_file():
        return []
    with log.open("rb") as out:
        out.seek(offset)
        return logged_retries(out.read().decode(errors="replace"))
