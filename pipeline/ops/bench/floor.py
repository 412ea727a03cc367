"""Runner (e), the Faust floor: the worker's Faust app and read path, booking nothing.

    python -m pipeline.ops.bench.floor --expect N --out FILE     (settings from the environment)

The app comes from `pipeline.stream.app.new_app` with the worker's settings, and its one agent
reads the usage topic the way the worker does (`pipeline.stream.usage_agent.takes`) and lets Faust
acknowledge each take. Once it has seen N records it writes one JSON object to FILE
(records, first and last receipt, epoch seconds) and exits: what one worker process
costs before it books anything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import faust

from pipeline.settings import Settings
from pipeline.stream import event_loop, heap
from pipeline.stream.app import new_app, resolve_replication, run
from pipeline.stream.kafka_access import KafkaAccess
from pipeline.stream.usage_agent import takes


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.ops.bench.floor")
    parser.add_argument("--expect", type=int, required=True, help="Records to read.")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    kafka = KafkaAccess(Settings().kafka_bootstrap_servers or "")
    event_loop.use(Settings())
    settings = asyncio.run(resolve_replication(Settings(), kafka))
    app, usage = new_app(settings, kafka)
    records = 0
    first: float | None = None

    @app.agent(usage)
    async def floor(stream: faust.StreamT[bytes]) -> None:
        nonlocal records, first
        heap.spare_startup_heap()  # as the worker does
        async for taken in takes(settings, stream):
            now = time.time()
            first = first or now
            records += len(taken)
            if records >= args.expect:
                seen = {"records": records, "first_receipt": first, "last_receipt": now}
                args.out.write_text(json.dumps(seen))
                os._exit(0)

    (settings.state_dir / "faust").mkdir(parents=True, exist_ok=True)
    run(app, "warning")


if __name__ == "__main__":
    main(sys.argv[1:])
