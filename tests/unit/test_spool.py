"""The LiteLLM callback's outage spool: records replay in order, appends during a replay
are kept for the next one, a crash before the release replays the claim again, and a
torn line is skipped."""

from __future__ import annotations

from pathlib import Path

from pipeline.gateways.spool import Outgoing, Spool

EVENT = Outgoing("usage", b"user-1", b'{"request_id": "a"}')
DEAD = Outgoing("dlq", None, b'{"x": 1}', (("dlq.reason", b"unknown_user"),))
LATER = Outgoing("usage", b"user-2", b'{"request_id": "b"}')


def test_records_replay_in_order_and_appends_during_a_replay_wait_for_the_next(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path / "deep" / "spool.jsonl")
    assert spool.claim() == [] and not spool.pending()
    spool.append([EVENT])
    spool.append([])
    spool.append([DEAD, EVENT])
    assert spool.claim() == [EVENT, DEAD, EVENT]
    spool.append([LATER])  # while the claim is being published
    spool.release()
    assert spool.pending()
    assert spool.claim() == [LATER]
    spool.release()
    assert spool.claim() == [] and not spool.pending()


def test_an_unreleased_claim_is_replayed_first_after_a_crash(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.jsonl")
    spool.append([EVENT])
    assert spool.claim() == [EVENT]  # then the process dies before the acks
    spool.append([LATER])
    again = Spool(tmp_path / "spool.jsonl")  # the restarted proxy
    assert again.claim() == [EVENT]
    again.release()
    assert again.claim() == [LATER]


def test_a_torn_last_line_is_left_out(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.jsonl")
    spool.append([EVENT, DEAD])
    with spool.path.open("a") as out:
        out.write('{"topic": "usage", "key": "u", "val')  # a crash while writing
    assert spool.claim() == [EVENT, DEAD]
    spool.release()
    with spool.path.open("a") as out:
        out.write('{"topic": "usage"')  # a spool of nothing but a torn line
    assert spool.claim() == [] and not spool.pending()
