"""Booked-up-to offsets in PostgreSQL: the check that no consumed record was skipped.

Each batch transaction records, per topic partition, the offset after the last record it
booked. A later batch for that partition must start at or before it. If it starts
after, the consumer skipped records (faust-streaming can acknowledge a range it never
delivered, for example when a fetch races a rebalance or a broker restart), so the
batch is not booked: the worker rewinds the group to the recorded offset and restarts.
A range that is still skipped right after such a rewind holds no records (the broker
starts past it, e.g. transaction markers) and is accepted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg


@dataclass(frozen=True, slots=True)
class Span:
    """The offsets of one partition's records in a batch."""

    topic: str
    partition: int
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class Gap:
    """Records between `expected` and `got` were never booked."""

    topic: str
    partition: int
    expected: int
    got: int


@dataclass(frozen=True, slots=True)
class Booked:
    next_offset: int
    rewound_to: int | None


def spans(positions: Iterable[tuple[str, int, int]]) -> list[Span]:
    """Group (topic, partition, offset) triples into one span per partition."""
    bounds: dict[tuple[str, int], tuple[int, int]] = {}
    for topic, partition, offset in positions:
        low, high = bounds.get((topic, partition), (offset, offset))
        bounds[topic, partition] = (min(low, offset), max(high, offset))
    return [Span(t, p, low, high) for (t, p), (low, high) in sorted(bounds.items())]


def find_gaps(batch: list[Span], booked: dict[tuple[str, int], Booked]) -> list[Gap]:
    gaps = []
    for span in batch:
        known = booked.get((span.topic, span.partition))
        if known is None or span.first <= known.next_offset:
            continue
        if known.rewound_to == known.next_offset:
            continue  # already rewound there once: nothing to read in between
        gaps.append(Gap(span.topic, span.partition, known.next_offset, span.first))
    return gaps


Cursor = psycopg.AsyncCursor[tuple[Any, ...]]


async def check_and_advance(cur: Cursor, group: str, batch: list[Span]) -> list[Gap]:
    """In the batch transaction: the gaps, or (if none) advance the booked offsets."""
    if not batch:
        return []
    await cur.execute(
        """
        SELECT topic, partition, next_offset, rewound_to FROM consumer_offsets
        WHERE consumer_group = %s AND (topic, partition) IN (
            SELECT * FROM unnest(%b::text[], %b::int[]))
        ORDER BY topic, partition FOR UPDATE
        """,
        (group, [s.topic for s in batch], [s.partition for s in batch]),
    )
    booked = {(r[0], r[1]): Booked(r[2], r[3]) for r in await cur.fetchall()}
    gaps = find_gaps(batch, booked)
    if gaps:
        return gaps
    await cur.execute(
        """
        INSERT INTO consumer_offsets AS o (consumer_group, topic, partition, next_offset)
        SELECT %s, * FROM unnest(%b::text[], %b::int[], %b::bigint[])
        ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET
            next_offset = greatest(o.next_offset, EXCLUDED.next_offset),
            rewound_to = NULL, updated_at = now()
        """,
        (
            group,
            [s.topic for s in batch],
            [s.partition for s in batch],
            [s.last + 1 for s in batch],
        ),
    )
    return []


async def mark_rewound(conn: psycopg.AsyncConnection[Any], group: str, gaps: list[Gap]) -> None:
    """Remember the rewind, so a range with no records is not rewound to forever."""
    async with conn.transaction():
        await conn.execute(
            """
            UPDATE consumer_offsets AS o SET rewound_to = v.expected, updated_at = now()
            FROM unnest(%b::text[], %b::int[], %b::bigint[]) AS v(topic, partition, expected)
            WHERE o.consumer_group = %s AND o.topic = v.topic AND o.partition = v.partition
            """,
            (
                [g.topic for g in gaps],
                [g.partition for g in gaps],
                [g.expected for g in gaps],
                group,
            ),
        )


class SkippedRecords(Exception):
    """Raised inside the batch transaction (to roll it back) when `gaps` were found."""

    def __init__(self, gaps: list[Gap]) -> None:
        super().__init__(
            ", ".join(f"{g.topic}[{g.partition}] {g.expected}..{g.got - 1}" for g in gaps)
        )
        self.gaps = gaps
