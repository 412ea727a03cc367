"""Measuring a runner: ledger commit times from PostgreSQL, CPU and memory from /proc.

Latency is exact: each ledger row's commit time (``pg_xact_commit_timestamp(xmin)``, with
``track_commit_timestamp`` on) minus its request's first Kafka timestamp, both from this
machine's clock. Throughput is rows / (last commit - first commit).

`ProcessSampler` reads /proc/<pid>/stat (utime + stime) and /proc/<pid>/status (VmHWM)
every few milliseconds, so the CPU a process spent between two instants (first and last
commit) is interpolated from its samples.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import psutil
import psycopg


@dataclass(frozen=True)
class LedgerTiming:
    rows: int
    """Every row of token_usage_ledger."""
    matched: int
    """Rows whose request_id is among the expected ones."""
    first_commit: float | None
    last_commit: float | None
    """Epoch seconds, over the matched rows."""
    latencies_ms: list[float]
    credits: int
    transactions: int = 0
    """Distinct transactions that wrote the matched rows."""

    @property
    def span(self) -> float | None:
        if self.first_commit is None or self.last_commit is None:
            return None
        return self.last_commit - self.first_commit


def ledger_timing(conninfo: str, publish_ms: dict[UUID, int]) -> LedgerTiming:
    """Commit times and latencies of the ledger rows of `publish_ms`'s requests."""
    with psycopg.connect(conninfo) as conn:
        conn.execute("CREATE TEMP TABLE bench_published (request_id uuid PRIMARY KEY, ms bigint)")
        with conn.cursor() as cur, cur.copy("COPY bench_published FROM STDIN") as copy:
            for request_id, ms in publish_ms.items():
                copy.write_row((request_id, ms))
        total = conn.execute("SELECT count(*) FROM token_usage_ledger").fetchone()
        rows = conn.execute(
            """
            SELECT extract(epoch FROM pg_xact_commit_timestamp(l.xmin))::float8, p.ms,
                   l.credits_deducted, l.xmin::text
            FROM token_usage_ledger l JOIN bench_published p USING (request_id)
            """
        ).fetchall()
    commits = [r[0] for r in rows]
    return LedgerTiming(
        rows=int(total[0]) if total else 0,
        matched=len(rows),
        first_commit=min(commits) if commits else None,
        last_commit=max(commits) if commits else None,
        latencies_ms=[r[0] * 1000 - r[1] for r in rows],
        credits=sum(int(r[2]) for r in rows),
        transactions=len({r[3] for r in rows}),
    )


def ledger_rows(conninfo: str, request_ids: Collection[UUID] | None = None) -> int:
    """Rows of token_usage_ledger (of `request_ids` only, if given)."""
    with psycopg.connect(conninfo) as conn:
        if request_ids is None:
            row = conn.execute("SELECT count(*) FROM token_usage_ledger").fetchone()
        else:
            row = conn.execute(
                "SELECT count(*) FROM token_usage_ledger WHERE request_id = ANY(%s)",
                (list(request_ids),),
            ).fetchone()
    return int(row[0]) if row else 0


def process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of `pid`; None once it is gone."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)


def children_of(root: int) -> list[int]:
    """Pids whose parent is `root`."""
    try:
        return [child.pid for child in psutil.Process(root).children()]
    except psutil.Error:
        return []


def tree_cpu(root: int, children: list[int]) -> float | None:
    """CPU seconds of `root`, of its live `children` and of its exited (waited-for)
    children: a PostgreSQL postmaster and its backends."""
    try:
        times = psutil.Process(root).cpu_times()
    except psutil.Error:
        return None
    own = times.user + times.system + times.children_user + times.children_system
    return float(own) + sum(process_cpu(c) or 0.0 for c in children)


def peak_rss_kib(pid: int) -> int | None:
    """VmHWM, the peak resident set (psutil reports the current one only)."""
    try:
        return parse_vmhwm_kib(Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return None


def parse_vmhwm_kib(text: str) -> int | None:
    """VmHWM (peak resident set) of a /proc/<pid>/status text, in KiB."""
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def interpolate(samples: list[tuple[float, float]], at: float) -> float | None:
    """The value at time `at` of (time, value) samples sorted by time, linear in between."""
    if not samples:
        return None
    times = [t for t, _ in samples]
    i = bisect.bisect_left(times, at)
    if i == 0:
        return samples[0][1]
    if i == len(samples):
        return samples[-1][1]
    (t0, v0), (t1, v1) = samples[i - 1], samples[i]
    return v0 if t1 == t0 else v0 + (v1 - v0) * (at - t0) / (t1 - t0)


@dataclass
class ProcessSampler:
    """Samples a process's CPU and peak RSS (and the database server's CPU) in a thread."""

    pid: int
    postmaster: int | None = None
    interval: float = 0.05
    rescan_every: int = 20
    """Samples between two scans of /proc for the postmaster's children."""
    cpu: list[tuple[float, float]] = field(default_factory=list)
    db_cpu: list[tuple[float, float]] = field(default_factory=list)
    peak_kib: int | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> ProcessSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        backends: list[int] = []
        count = 0
        while not self._stop.is_set():
            if self.postmaster is not None and count % self.rescan_every == 0:
                backends = children_of(self.postmaster)
            count += 1
            self.sample(backends)
            self._stop.wait(self.interval)

    def sample(self, backends: list[int]) -> None:
        now = time.time()
        cpu = process_cpu(self.pid)
        if cpu is not None:
            self.cpu.append((now, cpu))
            self.peak_kib = peak_rss_kib(self.pid) or self.peak_kib
        if self.postmaster is not None:
            db = tree_cpu(self.postmaster, backends)
            if db is not None:
                self.db_cpu.append((now, db))

    def cpu_between(self, start: float | None, end: float | None) -> tuple[float | None, ...]:
        """(process CPU seconds, database CPU seconds) spent between two epoch times."""
        if start is None or end is None:
            return None, None
        return tuple(_delta(s, start, end) for s in (self.cpu, self.db_cpu))


def _delta(samples: list[tuple[float, float]], start: float, end: float) -> float | None:
    a, b = interpolate(samples, start), interpolate(samples, end)
    return None if a is None or b is None else b - a
