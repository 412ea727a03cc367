"""The usage agent's backlog: takes gather while a booking is in flight, in order, bounded."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pipeline.stream.usage_agent import Backlog

DEADLINE = 5.0


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, DEADLINE))


async def after_tasks_made_before() -> None:
    """Return once every task scheduled before this call has run to its first wait: the
    loop runs ready tasks in the order they were made, so a task made now runs after
    theirs (no sleeping, no polling)."""
    await asyncio.ensure_future(_nothing())


async def _nothing() -> None:
    return None


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
        await after_tasks_made_before()
        assert not waiting.done()  # nothing to book yet
        await backlog.add(["x"], 10)  # type: ignore[list-item]
        return await waiting

    assert run(scenario()) == (["x"], 1)


@pytest.mark.parametrize(
    ("first", "size"),
    [(["a", "b", "c"], 30), (["batch record"], 3 * Backlog.EVENT_BYTES)],
    ids=["by records", "by bytes"],
)
def test_a_full_backlog_holds_the_agent_back_until_the_booking_loop_takes_it(
    first: list[str], size: int
) -> None:
    async def scenario() -> list[Any]:
        backlog = Backlog(limit=3)
        await backlog.add(first, size)  # type: ignore[arg-type]
        adding = asyncio.ensure_future(backlog.add(["next"], 10))  # type: ignore[list-item]
        await after_tasks_made_before()
        held = not adding.done()
        taken, _ = await backlog.next()
        await adding
        return [held, taken, (await backlog.next())[0]]

    assert run(scenario()) == [True, first, ["next"]]
