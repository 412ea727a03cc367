"""A user's account as the gateway asks before a request: balance, entitlement, usage.

Read from PostgreSQL, exactly (the balance is `user_credit_balance`, the usage the daily
summaries `report daily` reads); each answer is built by a pure function of the rows.
"""

from __future__ import annotations

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


_ACCOUNT = """
SELECT u.id, coalesce(b.amount, 0), (
         SELECT min(s.expires_at) FROM user_credit_source s
         WHERE s.user_id = u.id AND s.amount > 0 AND s.expires_at > now()
       ), now()
FROM users u LEFT JOIN user_credit_balance b ON b.user_id = u.id
WHERE u.id = %s
"""


async def account(conn: AsyncConnection[Any], user: UUID) -> Account | None:
    """The account of `user`, or None if there is no such user."""
    cur = await conn.execute(_ACCOUNT, (user,))
    row = await cur.fetchone()
    return Account(*row) if row is not None else None


async def usage(conn: AsyncConnection[Any], user: UUID, start: date, end: date) -> list[Any]:
    """The user's daily summary rows, as `report daily --user` prints them."""
    cur = await conn.execute(report.BY_USER, {"from": start, "to": end, "user": user})
    assert cur.description is not None
    columns = tuple(c.name for c in cur.description)
    rows = tuple(tuple(r) for r in await cur.fetchall())
    return report.objects(report.Report(columns, rows))
