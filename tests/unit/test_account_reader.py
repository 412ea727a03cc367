"""The API's account lookups share queries under load: while the connections are busy,
the lookups that arrive wait and are read together by the next query."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import UUID

from pipeline.api.accounts import Account, AccountReader

NOW = datetime(2026, 12, 2, tzinfo=UTC)
DEADLINE_SECONDS = 5.0
USERS = [uuid.uuid4() for _ in range(6)]


class Books:
    """The accounts of USERS but the last; each read waits until `go` is set."""

    def __init__(self) -> None:
        self.reads: list[list[UUID]] = []
        self.began: asyncio.Queue[None] = asyncio.Queue()  # one item per read begun
        self.go = asyncio.Event()
        self.fail: Exception | None = None

    async def read(self, users: Sequence[UUID]) -> dict[UUID, Account]:
        self.reads.append(list(users))
        self.began.put_nowait(None)
        await self.go.wait()
        if self.fail is not None:
            raise self.fail
        return {u: Account(u, i, None, NOW) for i, u in enumerate(USERS[:-1]) if u in users}


async def reads_begun(books: Books, count: int) -> None:
    """Wait until `count` more reads have begun, failing after DEADLINE_SECONDS."""
    async with asyncio.timeout(DEADLINE_SECONDS):
        for _ in range(count):
            await books.began.get()


async def first_steps_taken() -> None:
    """Return once every task created before this call has run its first step: the loop
    runs ready tasks in the order they were scheduled, so a task made now runs after them."""

    async def nothing() -> None:
        return None

    await asyncio.ensure_future(nothing())


def test_lookups_arriving_while_the_connections_are_busy_share_the_next_query() -> None:
    async def scenario() -> tuple[list[Account | None], list[list[UUID]]]:
        books = Books()
        reader = AccountReader(books.read, in_flight=1)
        first = asyncio.ensure_future(reader.account(USERS[0]))
        await reads_begun(books, 1)  # the first query is in flight
        rest = [asyncio.ensure_future(reader.account(u)) for u in [*USERS, USERS[1]]]
        await first_steps_taken()
        assert reader.waiting == len(rest)
        books.go.set()
        return await asyncio.gather(first, *rest), books.reads

    answers, reads = asyncio.run(scenario())
    assert reads == [[USERS[0]], USERS]  # idle: alone; busy: all the waiting at once, once each
    assert [a.balance if a else None for a in answers] == [0, 0, 1, 2, 3, 4, None, 1]


def test_a_failed_query_fails_every_lookup_it_was_answering() -> None:
    async def scenario() -> list[BaseException | Account | None]:
        books = Books()
        books.fail = RuntimeError("PostgreSQL went away")
        reader = AccountReader(books.read, in_flight=2)
        lookups = [asyncio.ensure_future(reader.account(u)) for u in USERS[:3]]
        await reads_begun(books, 2)
        assert reader.waiting == 1
        books.go.set()
        return await asyncio.gather(*lookups, return_exceptions=True)

    answers = asyncio.run(scenario())
    assert all(isinstance(a, RuntimeError) for a in answers)


def test_a_query_reads_at_most_per_query_users() -> None:
    async def scenario() -> list[list[UUID]]:
        books = Books()
        books.go.set()
        reader = AccountReader(books.read, in_flight=1, per_query=2)
        await asyncio.gather(*(reader.account(u) for u in USERS))
        return books.reads

    reads = asyncio.run(scenario())
    assert reads == [USERS[:1], USERS[1:3], USERS[3:5], USERS[5:]]
