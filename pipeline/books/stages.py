"""Where booking time goes: thread CPU and wall seconds per stage, summed over batches.

The booker times `decode` (unpacking records into events), and inside each batch
transaction the whole `transaction`, its `plan` and its `dead_letters` (publishing the
rejects before the commit). What the transaction spends apart from those is psycopg and
SQL/COPY encoding (CPU) and waiting on PostgreSQL (wall time the thread was idle).
`per_event` turns the sums into those figures, in microseconds per event; the stream
bench prints them beside Faust's own per-message cost.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

STAGES = ("decode", "transaction", "plan", "dead_letters")


@dataclass
class Timing:
    cpu: float = 0.0
    wall: float = 0.0


@dataclass
class StageClock:
    spans: dict[str, Timing] = field(default_factory=lambda: {s: Timing() for s in STAGES})

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        cpu, wall = time.thread_time(), time.perf_counter()
        try:
            yield
        finally:
            span = self.spans[name]
            span.cpu += time.thread_time() - cpu
            span.wall += time.perf_counter() - wall


@contextmanager
def timed(clock: StageClock | None, name: str) -> Iterator[None]:
    """`clock.stage(name)`, or nothing when there is no clock."""
    if clock is None:
        yield
        return
    with clock.stage(name):
        yield


def per_event(clock: StageClock, events: int) -> dict[str, float]:
    """Microseconds per event: decode, plan, SQL (psycopg and encoding, CPU), dead letters
    (CPU) and waiting on PostgreSQL (idle wall time inside the transactions)."""
    if events <= 0:
        return {}
    s = clock.spans
    tx, plan, dlq = s["transaction"], s["plan"], s["dead_letters"]
    figures = {
        "decode": s["decode"].cpu,
        "plan": plan.cpu,
        "sql_encoding": tx.cpu - plan.cpu - dlq.cpu,
        "dead_letters": dlq.cpu,
        "waiting_on_postgres": (tx.wall - tx.cpu) - (dlq.wall - dlq.cpu),
    }
    return {name: seconds * 1e6 / events for name, seconds in figures.items()}
