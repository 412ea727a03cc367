"""Whose fault a database error is, by its SQLSTATE class: only a value of one event may
be dead-lettered; anything else is ours (the server, the network, the deployment) and is
retried, never blamed on an event.

Classes 22 (data exception) and 23 (integrity constraint violation) but 23505 (a unique
violation: a concurrent batch booked the request first) are the event's; every other
class, and an error without SQLSTATE, is ours. The table of classes, what the worker does
with each and what an operator does is docs/database-faults.md (one copy; a unit test
holds it to `blames_the_event`).

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
