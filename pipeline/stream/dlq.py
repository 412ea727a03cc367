"""Dead-letter records: the original key and value bytes, verbatim, with the why in headers.

Keeping the value untouched (the Kafka Connect convention) means `dlq replay` publishes
exactly what the gateway sent, and any tool can read the reason from the headers.
An event of a batch record is dead-lettered on its own: the value is that event's bytes
and the `dlq.source.index` header its position in the record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from pipeline.core.records import element
from pipeline.errors import Reason

HEADER_PREFIX = "dlq."


class SourceMessage(NamedTuple):
    """Where a consumed message came from, and its raw bytes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None
    batch_index: int | None = None
    """Position of the event in a batch record (`pipeline.core.records`); None for a record of
    one event. `value` is then the whole batch record."""

    def event_value(self) -> bytes | None:
        """The bytes of this one event."""
        return element(self.value, self.batch_index)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    detail: str
    source_topic: str
    source_partition: int
    source_offset: int
    failed_at: datetime
    key: bytes | None
    value: bytes | None
    source_index: int | None = None


def dead_letter(source: SourceMessage, reason: Reason, detail: str, at: datetime) -> DeadLetter:
    return DeadLetter(
        reason=reason.value,
        detail=detail,
        source_topic=source.topic,
        source_partition=source.partition,
        source_offset=source.offset,
        failed_at=at,
        key=source.key,
        value=source.event_value(),
        source_index=source.batch_index,
    )


def to_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    fields = {
        "reason": letter.reason,
        "detail": letter.detail,
        "source.topic": letter.source_topic,
        "source.partition": str(letter.source_partition),
        "source.offset": str(letter.source_offset),
        "failed_at": letter.failed_at.astimezone(UTC).isoformat(),
    }
    if letter.source_index is not None:
        fields["source.index"] = str(letter.source_index)
    return [(HEADER_PREFIX + k, v.encode()) for k, v in fields.items()]


def from_record(
    headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...],
    key: bytes | None,
    value: bytes | None,
) -> DeadLetter:
    """Read a dead-letter record back; raises ValueError if its headers are not ours."""
    found = {
        k[len(HEADER_PREFIX) :]: v.decode(errors="replace")
        for k, v in headers
        if k.startswith(HEADER_PREFIX)
    }
    try:
        return DeadLetter(
            reason=found["reason"],
            detail=found.get("detail", ""),
            source_topic=found["source.topic"],
            source_partition=int(found["source.partition"]),
            source_offset=int(found["source.offset"]),
            failed_at=datetime.fromisoformat(found["failed_at"]),
            key=key,
            value=value,
            source_index=int(found["source.index"]) if "source.index" in found else None,
        )
    except (KeyError, ValueError) as exc:
        raise ValueError(f"not a dead-letter record: {exc}") from None
