"""A user's account as the gateway asks before a request: balance, entitlement, usage.

Read from PostgreSQL, exactly (the balance is `user_credit_balance`, the usage the daily
summaries `report daily` reads); each answer is built by a pure function of the rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection

from pipeline.money import report


@dataclass(frozen=True, slots=True)
class Account:
    user: UUID
    balance: int
    soonest_expiry: datetime | None
    as_of: datetime


def status(balance: int, low_water: int) -> str:
    """ok, low (under the low-water mark), exhausted (zero) or overdrawn (below zero)."""
    if balance < 0:
        return "overdrawn"
    if balance == 0:
        return "exhausted"
    return "low" if balance < low_water else "ok"


def balance_answer(account: Account, low_water: int) -> dict[str, Any]:
    return {
        "user_id": str(account.user),
        "balance": account.balance,
        "low_balance_credits": low_water,
        "status": status(account.balance, low_water),
        "soonest_expiry": account.soonest_expiry.isoformat() if account.soonest_expiry else None,
        "as_of": account.as_of.isoformat(),
    }


def entitlement_answer(account: Account, credits: int, low_water: int) -> dict[str, Any]:
    """May the user start a request expected to cost `credits`: only if the balance
    covers it (an overdrawn or exhausted account never may)."""
    allowed = account.balance > 0 and account.balance >= credits
    return {
        "user_id": str(account.user),
        "allowed": allowed,
        "credits": credits,
        "balance": account.balance,
        "shortfall": max(0, credits - account.balance) if not allowed else 0,
        "status": status(account.balance, low_water),
        "as_of": account.as_of.isoformat(),
    }


_ACCOUNTS = """
SELECT u.id, coalesce(b.amount, 0), (
         SELECT min(s.expires_at) FROM user_credit_source s
         WHERE s.user_id = u.id AND s.amount > 0 AND s.expires_at > now()
       ), now()
FROM users u LEFT JOIN user_credit_balance b ON b.user_id = u.id
WHERE u.id = ANY(%b)
"""


async def accounts(conn: AsyncConnection[Any], users: Sequence[UUID]) -> dict[UUID, Account]:
    """The accounts of those of `users` that exist, in one query."""
    cur = await conn.execute(_ACCOUNTS, (list(users),))
    return {row[0]: Account(*row) for row in await cur.fetchall()}


class AccountReader:
    """Account lookups answered together: at most `in_flight` queries run at once (the
    pool's connections), and the lookups that arrive meanwhile wait for the next free one,
    which reads them all in one query (up to `per_query` users). Idle, a lookup is one
    query as before; under load, the checks share queries instead of queueing for
    connections one by one.
    """

    def __init__(
        self,
        read: Callable[[Sequence[UUID]], Awaitable[dict[UUID, Account]]],
        in_flight: int,
        per_query: int = 500,
    ) -> None:
        self._read, self._in_flight, self._per_query = read, in_flight, per_query
        self._running = 0
        self._waiting: list[tuple[UUID, asyncio.Future[Account | None]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def waiting(self) -> int:
        """Lookups waiting for a free connection's query."""
        return len(self._waiting)

    async def account(self, user: UUID) -> Account | None:
        """The account of `user`, or None if there is no such user."""
        found: asyncio.Future[Account | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((user, found))
        self._start()
        return await found

    def _start(self) -> None:
        while self._waiting and self._running < self._in_flight:
            batch = self._waiting[: self._per_query]
            del self._waiting[: self._per_query]
            self._running += 1
            task = asyncio.get_running_loop().create_task(self._answer(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _answer(self, batch: list[tuple[UUID, asyncio.Future[Account | None]]]) -> None:
        try:
            found = await self._read(list(dict.fromkeys(user for user, _ in batch)))
        except Exception as exc:  # each waiting request answers it (a 503, say)
            for _, waiting in batch:
                if not waiting.done():
                    waiting.set_exception(exc)
        else:
            for user, waiting in batch:
                if not waiting.done():
                    waiting.set_result(found.get(user))
        finally:
            self._running -= 1
            self._start()


async def usage(conn: AsyncConnection[Any], user: UUID, start: date, end: date) -> list[Any]:
    """The user's daily summary rows, as `report daily --user` prints them."""
    cur = await conn.execute(report.BY_USER, {"from": start, "to": end, "user": user})
    assert cur.description is not None
    columns = tuple(c.name for c in cur.description)
    rows = tuple(tuple(r) for r in await cur.fetchall())
    return report.objects(report.Report(columns, rows))
