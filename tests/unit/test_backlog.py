"""The usage agent's backlog: takes gather while a booking is in flight, in order, bounded."""

from __future__ import annotations

import asyncio
from typing import Any

from pipeline.stream.usage_agent import Backlog

DEADLINE = 5.0


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, DEADLINE))


def test_what_waits_is_booked_at_once_in_order_with_its_take_count() -> None:
    async def scenario() -> tuple[list[Any], int]:
        backlog = Backlog(limit=100)
        for take in (["a1", "a2"], ["b1"], ["c1", "c2", "c3"]):
            await backlog.add(take, 10)  # type: ignore[arg-type]
        return await backlog.next()

    assert run(scenario()) == (["a1", "a2", "b1", "c1", "c2", "c3"], 3)


def test_the_booking_loop_waits_for_a_take_and_gets_it_at_once() -> None:
    async def scenario() -> tuple[list[Any], int]:
        backlog = Backlog(limit=100)
        waiting = asyncio.ensure_future(backlog.next())
        await asyncio.sleep(0)
        assert not waiting.done()  # nothing to book yet
        await backlog.add(["x"], 10)  # type: ignore[list-item]
        return await waiting

    assert run(scenario()) == (["x"], 1)


def test_a_full_backlog_holds_the_agent_back_until_the_booking_loop_takes_it() -> None:
    async def scenario() -> list[Any]:
        backlog = Backlog(limit=3)
        await backlog.add(["a", "b", "c"], 30)  # type: ignore[list-item]
        adding = asyncio.ensure_future(backlog.add(["d"], 10))  # type: ignore[list-item]
        for _ in range(10):
            await asyncio.sleep(0)
        held = not adding.done()
        first, _ = await backlog.next()
        await adding
        second, _ = await backlog.next()
        return [held, first, second]

    assert run(scenario()) == [True, ["a", "b", "c"], ["d"]]


def test_large_records_hold_the_agent_back_by_their_bytes() -> None:
    async def scenario() -> list[Any]:
        backlog = Backlog(limit=100)
        await backlog.add(["batch record"], 100 * Backlog.EVENT_BYTES)  # type: ignore[list-item]
        adding = asyncio.ensure_future(backlog.add(["next"], 10))  # type: ignore[list-item]
        for _ in range(10):
            await asyncio.sleep(0)
        held = not adding.done()
        first, _ = await backlog.next()
        await adding
        return [held, first, (await backlog.next())[0]]

    assert run(scenario()) == [True, ["batch record"], ["next"]]
