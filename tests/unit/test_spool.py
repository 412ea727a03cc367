"""The LiteLLM callback's outage spool: records survive in order, a torn line is skipped."""

from __future__ import annotations

from pathlib import Path

from pipeline.gateways.spool import Outgoing, Spool

EVENT = Outgoing("usage", b"user-1", b'{"request_id": "a"}')
DEAD = Outgoing("dlq", None, b'{"x": 1}', (("dlq.reason", b"unknown_user"),))


def test_records_read_back_in_order_across_appends(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "deep" / "spool.jsonl")
    assert spool.read() == []
    spool.append([EVENT])
    spool.append([])
    spool.append([DEAD, EVENT])
    assert spool.read() == [EVENT, DEAD, EVENT]
    spool.clear()
    assert spool.read() == [] and not spool.path.exists()


def test_a_torn_last_line_is_left_out(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.jsonl")
    spool.append([EVENT, DEAD])
    with spool.path.open("a") as out:
        out.write('{"topic": "usage", "key": "u", "val')  # a crash while writing
    assert spool.read() == [EVENT, DEAD]
