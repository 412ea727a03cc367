"""Whose fault a database error is, by its SQLSTATE class: only a value of one event may
be dead-lettered; anything else is ours (the server, the network, the deployment) and is
retried, never blamed on an event.

SQLSTATE, what it is, whose fault, what the booker does:

- class 22, data exception (a value out of range, too long, malformed): the event's; the
  batch is split down to that event, which is dead-lettered as `database_rejected`;
- class 23 but 23505, integrity constraint violation (a check, not-null or foreign key a
  value breaks): the event's; the same;
- 23505, unique violation (a concurrent batch booked the request first): ours; retried,
  and the retry sees a duplicate;
- 08, 57, 53, 58 (connection lost, the server shutting down or starting, out of disk or
  memory, I/O error) and 40 (serialization failure, deadlock): ours; retried with backoff;
- 25006, read-only transaction (a standby, or a primary made read-only): ours; retried
  until the server is writable;
- 42, 3D, 28 (no privilege, a missing table or column: a migration not applied, a bad
  login): ours; retried with backoff until an operator fixes it, logged as ours;
- no SQLSTATE (the driver's own errors) and any other class: ours; retried.

A retried batch is never acknowledged: a worker told to stop gives up with
`BatchNotBooked` and exits unacknowledged, and the next start books it.
"""

from __future__ import annotations

import psycopg

EVENT_CLASSES = frozenset({"22", "23"})
UNIQUE_VIOLATION = "23505"


def blames_the_event(exc: psycopg.Error) -> bool:
    """Whether `exc` is the refusal of a value of the events being written."""
    state = exc.sqlstate or ""
    return state[:2] in EVENT_CLASSES and state != UNIQUE_VIOLATION
