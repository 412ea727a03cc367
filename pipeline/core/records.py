"""Kafka record values and the events they carry: contract v1.1.

A record's value is either one contract-v1 event (a JSON object) or a **batch record**:
a JSON array of 1 to `BATCH_RECORD_MAX` events whose users all hash to the record's
partition (producers group them with `group_by_partition`). Each event of a batch record
is decoded, priced, deduplicated and dead-lettered on its own; a record that is not
valid JSON, or an array of the wrong length, is rejected as one record.

Decoding never raises. A batch record is validated in one pydantic pass that gives each
element its own verdict; only a record that is not a JSON array of the right length is
split (into its elements' own bytes), and a rejected event's bytes are cut out of its
record when it is dead-lettered.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any

from aiokafka.partitioner import murmur2
from pydantic import (
    Field,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic_core import SchemaValidator, core_schema

from pipeline.core.events import (
    FLAT_EVENT_SCHEMA,
    Decoded,
    Rejection,
    UsageEvent,
    check_skew,
    decode,
    rejection,
)
from pipeline.errors import Reason

BATCH_RECORD_MAX = 500
"""Events one batch record may carry."""


def _each_alone(value: Any, handler: ValidatorFunctionWrapHandler) -> UsageEvent | Rejection:
    """One element's own verdict, so that one bad event does not fail its record."""
    try:
        event: UsageEvent = handler(value)
    except ValidationError as exc:
        return rejection(exc)
    return event


_BATCH: TypeAdapter[list[UsageEvent | Rejection]] = TypeAdapter(
    Annotated[
        list[Annotated[UsageEvent, WrapValidator(_each_alone)]],
        Field(min_length=1, max_length=BATCH_RECORD_MAX),
    ]
)
_FLAT_BATCH = SchemaValidator(
    core_schema.list_schema(FLAT_EVENT_SCHEMA, min_length=1, max_length=BATCH_RECORD_MAX)
)
"""A batch record of valid events in the flat shape, validated straight from the JSON."""
_WHITESPACE = b" \t\r\n"
_SCANNER = json.JSONDecoder()


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a record value (contract v1.1), as shipped in
    `schemas/usage-record.v1.1.json`: one v1 event, or a batch record of them."""
    event = {"$ref": "usage-event.v1.json"}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "usage-record.v1.1.json",
        "title": "Usage record v1.1",
        "description": (
            "The value of a usage.events record: one contract-v1 event, or a batch record "
            f"of 1 to {BATCH_RECORD_MAX} of them whose user_ids hash to the record's "
            "partition (Kafka's murmur2 of the user_id text)."
        ),
        "oneOf": [
            event,
            {"type": "array", "minItems": 1, "maxItems": BATCH_RECORD_MAX, "items": event},
        ],
    }


def is_batch(raw: bytes | None) -> bool:
    """A batch record's value starts with `[` (after JSON whitespace)."""
    return raw is not None and raw.lstrip(_WHITESPACE)[:1] == b"["


Item = tuple[int | None, Decoded]
"""(position in the batch record or None for a whole record, its decoded event)."""


def decode_record(raw: bytes | None, now: datetime, max_future_skew: timedelta) -> list[Item]:
    """The events of one record, in order: one item for an object (or a malformed
    record), one per element for a batch record."""
    if not is_batch(raw):
        return [(None, decode(raw, now, max_future_skew))]
    assert raw is not None
    if b'"usage"' not in raw:
        try:
            events: list[UsageEvent] = _FLAT_BATCH.validate_json(raw)
        except ValidationError:
            pass  # a bad event, or the `usage` shape: each element gets its own verdict
        else:
            return [(i, check_skew(e, now, max_future_skew)) for i, e in enumerate(events)]
    try:
        items = _BATCH.validate_json(raw)
    except ValidationError:  # not JSON, not an array, or of the wrong length
        return _decode_elements(raw, now, max_future_skew)
    return [
        (i, item if isinstance(item, Rejection) else check_skew(item, now, max_future_skew))
        for i, item in enumerate(items)
    ]


def _decode_elements(raw: bytes, now: datetime, max_future_skew: timedelta) -> list[Item]:
    try:
        elements = split(raw)
    except ValueError as exc:
        return [(None, Rejection(Reason.MALFORMED_JSON, f"batch record: {exc}"))]
    if not 1 <= len(elements) <= BATCH_RECORD_MAX:
        detail = f"a batch record holds 1 to {BATCH_RECORD_MAX} events, this one {len(elements)}"
        return [(None, Rejection(Reason.SCHEMA_VIOLATION, detail))]
    return [(i, decode(e, now, max_future_skew)) for i, e in enumerate(elements)]


@functools.lru_cache(maxsize=8)
def split(raw: bytes) -> tuple[bytes, ...]:
    """The elements of a JSON array, each as its own original bytes (the last few records
    split are remembered: each rejected event of a record needs its bytes twice).

    Raises ValueError (a `JSONDecodeError` or `UnicodeDecodeError`) if `raw` is not a
    JSON array.
    """
    text = raw.decode()
    pos = _skip(text, 0)
    if text[pos : pos + 1] != "[":
        raise ValueError("not a JSON array")
    pos = _skip(text, pos + 1)
    elements: list[bytes] = []
    if text[pos : pos + 1] == "]":
        return _end(text, pos + 1, elements)
    while True:
        _, end = _SCANNER.raw_decode(text, pos)
        elements.append(text[pos:end].encode())
        pos = _skip(text, end)
        if text[pos : pos + 1] == "]":
            return _end(text, pos + 1, elements)
        if text[pos : pos + 1] != ",":
            raise json.JSONDecodeError("expected ',' or ']'", text, pos)
        pos = _skip(text, pos + 1)


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _end(text: str, pos: int, elements: list[bytes]) -> tuple[bytes, ...]:
    if _skip(text, pos) != len(text):
        raise json.JSONDecodeError("extra data after the array", text, pos)
    return tuple(elements)


def element(raw: bytes | None, index: int | None) -> bytes | None:
    """The bytes of event `index` of a batch record (the whole value when None, or if
    Python's JSON scanner cannot split what pydantic's parser accepted)."""
    if index is None or raw is None:
        return raw
    try:
        return split(raw)[index]
    except (ValueError, IndexError):
        return raw


def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2, as Java clients and aiokafka)."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


def group_by_partition(
    events: Sequence[tuple[bytes | None, bytes]], partitions: int, size: int = BATCH_RECORD_MAX
) -> list[tuple[bytes | None, bytes]]:
    """(user key, event JSON) pairs -> (key, value) records: batch records of up to `size`
    events whose keys hash to one partition (`partition_groups`)."""
    return batch_records(events, partition_groups([k for k, _ in events], partitions, size))


def batch_records(
    events: Sequence[tuple[bytes | None, bytes]], groups: Sequence[Sequence[int]]
) -> list[tuple[bytes | None, bytes]]:
    """One record per group of positions into `events`: a batch record keyed by its first
    event's key, or, for an event without a key (unparseable), that event as it was."""
    records: list[tuple[bytes | None, bytes]] = []
    for group in groups:
        key, value = events[group[0]]
        records.append(
            (None, value) if key is None else (key, batch_value([events[i][1] for i in group]))
        )
    return records


def partition_groups(
    keys: Sequence[bytes | None], partitions: int, size: int = BATCH_RECORD_MAX
) -> list[list[int]]:
    """Positions of `keys` grouped into batch records: up to `size` positions of one
    partition each, in per-partition order; an unkeyed position is a group of its own.
    Groups are listed in the order they fill up, the partly filled ones last."""
    if not 1 <= size <= BATCH_RECORD_MAX:
        raise ValueError(f"a batch record holds 1 to {BATCH_RECORD_MAX} events, not {size}")
    open_groups: dict[int, list[int]] = {}
    groups: list[list[int]] = []
    for position, key in enumerate(keys):
        if key is None:
            groups.append([position])
            continue
        partition = partition_of(key, partitions)
        group = open_groups.setdefault(partition, [])
        group.append(position)
        if len(group) == size:
            groups.append(open_groups.pop(partition))
    return groups + list(open_groups.values())


def batch_value(values: Sequence[bytes]) -> bytes:
    """A batch record's value: the events' JSON as one array."""
    return b"[" + b",".join(values) + b"]"
