"""How far the worker's own CPU per event can come down without leaving its libraries
(issue 10): the work every booked event needs from pydantic, hashlib, psycopg's C COPY
formatting and `decimal`, each timed alone on the bench stream.

- decode: `pipeline.core.events.decode` of every record (the malformed and the
  redelivered ones too, as the worker does), per unique valid event;
- fingerprint: `UsageEvent.fingerprint` (pydantic's `to_json` and sha256);
- COPY formatting: psycopg's C binary row formatter (what `Copy.write_row` calls) on one
  usage row and one deduction row per event, of the books' column types;
- pricing: the `Decimal` arithmetic of a plain request's price, credits and margin;
- a deduction id (`uuid.UUID(int=...)`).

Rerun (a quiet machine, the package installed):
    python docs/spikes/library_floor.py [EVENTS]
It prints each part's thread CPU in us per valid event (the median of 7 passes) and the sum.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import psycopg
from psycopg.adapt import Transformer
from psycopg.pq import Format
from psycopg_binary import _psycopg  # the C formatter behind Copy.write_row

from pipeline.books.transaction import _DEDUCTION_TYPES, _USAGE_TYPES
from pipeline.core.events import UsageEvent, decode
from pipeline.core.plan import DeductionRow, UsageRow
from pipeline.money.catalog import load_litellm
from pipeline.ops.bench import traffic

CATALOG = Path(__file__).resolve().parents[2] / "data" / "litellm-model-prices-1.110.2.json"
PASSES = 7


def transformer(types: Sequence[str]) -> Transformer:
    tx = Transformer()
    tx.set_dumper_types([psycopg.adapters.types[t].oid for t in types], Format.BINARY)
    return tx


def usage_row(e: UsageEvent, provider: uuid.UUID) -> UsageRow:
    return UsageRow(
        e.request_id, e.user_id, None, e.model, provider, e.input_tokens, e.output_tokens,
        e.cached_input_tokens, e.cache_write_tokens, Decimal("0.00012345"), Decimal("1.5"),
        Decimal("0.0002"), 2, e.request_type, None, e.started_at, e.completed_at, 1234,
        e.status, None, True, "pro", e.region, uuid.uuid4(), os.urandom(32),
    )  # fmt: skip


def deduction_row(e: UsageEvent) -> DeductionRow:
    return DeductionRow(
        uuid.uuid4(), e.user_id, 2, 100, 98, e.request_id, Decimal("0.00012345"),
        Decimal("1.5"), Decimal("0.00006172"), "usage", "completed",
    )  # fmt: skip


INPUT, OUTPUT, READ = Decimal("0.0000025"), Decimal("0.00001"), Decimal("0.00000125")
EXPONENT, MULTIPLIER, USD_PER_CREDIT = Decimal("0.00000001"), Decimal("1.5"), Decimal("0.0001")


def pricing(e: UsageEvent) -> Decimal:
    exact = (e.input_tokens - e.cached_input_tokens) * INPUT + e.output_tokens * OUTPUT
    if e.cached_input_tokens:
        exact += e.cached_input_tokens * READ
    cost = exact.quantize(EXPONENT, rounding=ROUND_HALF_EVEN)
    credits = int((cost * MULTIPLIER / USD_PER_CREDIT).to_integral_value(rounding=ROUND_CEILING))
    return credits * USD_PER_CREDIT - cost


def per_event(work: Callable[[Any], object], items: Sequence[Any], events: int) -> float:
    passes = []
    for _ in range(PASSES):
        started = time.thread_time()
        for item in items:
            work(item)
        passes.append((time.thread_time() - started) / events * 1e6)
    return statistics.median(passes)


def main(count: int) -> None:
    now = datetime.now(UTC)
    models = traffic.pick_models(load_litellm(CATALOG).entries, 7)
    stream = traffic.generate(count, now, models, traffic.make_users(1000), seed=11)
    skew = timedelta(minutes=5)
    events = [d for d in (decode(r, now, skew) for r in stream.lines) if isinstance(d, UsageEvent)]
    provider = uuid.uuid4()
    usage = [usage_row(e, provider) for e in events]
    deductions = [deduction_row(e) for e in events]
    usage_tx, deduction_tx = transformer(_USAGE_TYPES), transformer(_DEDUCTION_TYPES)
    out = bytearray()

    def copy_usage(row: UsageRow) -> None:
        _psycopg.format_row_binary(row, usage_tx, out)
        out.clear()

    def copy_deduction(row: DeductionRow) -> None:
        _psycopg.format_row_binary(row, deduction_tx, out)
        out.clear()

    def decode_one(raw: bytes) -> object:
        return decode(raw, now, skew)

    ids = [2**100 + i for i in range(len(events))]
    n = len(events)
    parts = {
        "decode (pydantic, every record)": per_event(decode_one, stream.lines, n),
        "fingerprint (to_json, sha256)": per_event(UsageEvent.fingerprint, events, n),
        "COPY formatting, usage row": per_event(copy_usage, usage, n),
        "COPY formatting, deduction row": per_event(copy_deduction, deductions, n),
        "pricing (Decimal)": per_event(pricing, events, n),
        "a deduction id (UUID)": per_event(lambda i: uuid.UUID(int=i), ids, n),
    }
    for name, us in parts.items():
        print(f"{name:34s} {us:6.2f} us per valid event")
    print(f"{'sum':34s} {sum(parts.values()):6.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
