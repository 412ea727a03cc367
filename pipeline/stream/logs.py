"""Structured logs: one JSON object per line, and the event context every event log carries.

With ``LOG_FORMAT=json`` the worker's root handler writes JSON (`logging_config` is the
dictConfig fragment Faust merges into its own). A log line about one event passes
`event_context(message)` as ``extra``, so it carries the event's ``request_id`` (when the
bytes hold one) and where it came from: ``topic``, ``partition`` and ``offset``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pipeline.core.events import Rejection
from pipeline.stream.booker import BatchResult
from pipeline.stream.dlq import SourceMessage

LogFormat = Literal["text", "json"]
EVENT_FIELDS = ("request_id", "topic", "partition", "offset", "index", "reason")
"""Attributes copied from a log record into its JSON object when present."""


class JsonFormatter(logging.Formatter):
    """Format a record as a single-line JSON object."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in EVENT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def logging_config(log_format: LogFormat) -> dict[str, Any] | None:
    """The dictConfig Faust merges into its own for `log_format`; None keeps Faust's."""
    if log_format == "text":
        return None
    return {
        "version": 1,
        "merge": True,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            }
        },
    }


def event_context(message: SourceMessage) -> dict[str, Any]:
    """The ``extra`` of a log line about one consumed event."""
    return {
        "request_id": request_id_of(message.event_value()),
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
    } | ({} if message.batch_index is None else {"index": message.batch_index})


def request_id_of(value: bytes | None) -> str | None:
    """The event's ``request_id`` if its bytes are a JSON object that has one."""
    if not value:
        return None
    try:
        decoded = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(decoded, dict):
        found = decoded.get("request_id")
        return str(found) if found is not None else None
    return None


def rejected_events(
    result: BatchResult, messages: Sequence[SourceMessage]
) -> list[tuple[SourceMessage, Rejection]]:
    """Pair each rejection of a committed batch with its message.

    The booker may split a batch; its plans then cover consecutive slices of `messages`
    in order, each with one outcome per message and positions relative to its slice.
    """
    paired = []
    base = 0
    for plan in result.plans:
        for position, rejection in plan.rejections():
            if base + position < len(messages):
                paired.append((messages[base + position], rejection))
        base += len(plan.outcomes)
    return paired


def log_rejected(
    logger: logging.Logger, result: BatchResult, messages: Sequence[SourceMessage]
) -> None:
    """One warning per dead-lettered event of a committed batch, with its event context."""
    for message, rejection in rejected_events(result, messages):
        reason = rejection.reason.value
        logger.warning(
            "event dead-lettered: %s: %s",
            reason,
            rejection.detail,
            extra=event_context(message) | {"reason": reason},
        )
