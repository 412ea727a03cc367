"""Booked-up-to offsets in PostgreSQL: the check that no consumed record was skipped.

Each batch transaction records, per topic partition, the offset after the last record it
booked. A later batch for that partition must start at or before it, and hold every
offset between its first record and its last. If it starts after, or has a hole, the
consumer skipped records (faust-streaming can acknowledge a range it never delivered, and
drops records it fetched while a rebalance stops its flow: a take that began before the
rebalance and goes on after it misses them, see `pipeline.stream.refetch`), so the batch is
not booked: the worker rewinds the group to the recorded offset and restarts. A range
that is still skipped right after such a rewind holds no records (the broker starts past
it, e.g. transaction markers) and is accepted, so a rewind is marked (`mark_rewound`)
only once its offset commit took (`pipeline.stream.usage_agent.rewind`).
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
    holes: tuple[tuple[int, int], ...] = ()
    """Runs of offsets between `first` and `last` without a record (first, last of each)."""


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
    offsets: dict[tuple[str, int], set[int]] = {}
    for topic, partition, offset in positions:
        offsets.setdefault((topic, partition), set()).add(offset)
    return [_span(t, p, seen) for (t, p), seen in sorted(offsets.items())]


def _span(topic: str, partition: int, seen: set[int]) -> Span:
    first, last = min(seen), max(seen)
    if len(seen) == last - first + 1:
        return Span(topic, partition, first, last)
    holes: list[tuple[int, int]] = []
    previous = first
    for offset in sorted(seen):
        if offset > previous + 1:
            holes.append((previous + 1, offset - 1))
        previous = offset
    return Span(topic, partition, first, last, tuple(holes))


def find_gaps(batch: list[Span], booked: dict[tuple[str, int], Booked]) -> list[Gap]:
    """The first run of unbooked records each span skips: before its first record, or in
    a hole between its records (above what was booked already)."""
    gaps = []
    for span in batch:
        known = booked.get((span.topic, span.partition))
        if known is not None and known.rewound_to == known.next_offset:
            continue  # already rewound there once: nothing to read in between
        if known is not None and span.first > known.next_offset:
            gaps.append(Gap(span.topic, span.partition, known.next_offset, span.first))
            continue
        done = span.first if known is None else known.next_offset
        for _, high in span.holes:
            if high >= done:
                start = min(done, span.first) if known is None else done
                gaps.append(Gap(span.topic, span.partition, start, high + 1))
                break
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
    """Remember the rewind, so a range with no records is not rewound to forever (a
    partition the group never booked from starts its row at the rewind)."""
    async with conn.transaction():
        await conn.execute(
            """
            INSERT INTO consumer_offsets AS o
                (consumer_group, topic, partition, next_offset, rewound_to)
            SELECT %s, v.topic, v.partition, v.expected, v.expected
            FROM unnest(%b::text[], %b::int[], %b::bigint[]) AS v(topic, partition, expected)
            ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET
                rewound_to = EXCLUDED.rewound_to, updated_at = now()
            """,
            (
                group,
                [g.topic for g in gaps],
                [g.partition for g in gaps],
                [g.expected for g in gaps],
            ),
        )


class SkippedRecords(Exception):
    """Raised inside the batch transaction (to roll it back) when `gaps` were found."""

    def __init__(self, gaps: list[Gap]) -> None:
        super().__init__(
            ", ".join(f"{g.topic}[{g.partition}] {g.expected}..{g.got - 1}" for g in gaps)
        )
        self.gaps = gaps


async def booked_up_to(
    conn: psycopg.AsyncConnection[Any], group: str, topic: str
) -> dict[int, int]:
    """Per partition of `topic`, the offset after the last record `group` booked."""
    cur = await conn.execute(
        "SELECT partition, next_offset FROM consumer_offsets"
        " WHERE consumer_group = %s AND topic = %s",
        (group, topic),
    )
    return {partition: offset for partition, offset in await cur.fetchall()}
