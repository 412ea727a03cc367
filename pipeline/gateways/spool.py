"""An append-only local file of records that could not be published yet, replayed in
order once Kafka takes records again (the LiteLLM callback's outage buffer).

One JSON object per line: topic, key, value and headers as text (our keys, values and
headers are UTF-8). `append` syncs the file before it returns, so a spooled record
survives the process; `clear` empties it once every record read has been acknowledged.
A crash between the two replays them again: the books take each request once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple


class Outgoing(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


class Spool:
    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, records: Sequence[Outgoing]) -> None:
        if not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps(_as_json(r)) + "\n" for r in records)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(lines)
            out.flush()
            os.fsync(out.fileno())

    def read(self) -> list[Outgoing]:
        """Every spooled record, oldest first (a torn last line, from a crash while it was
        written, is left out: its record was never reported spooled)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        found = []
        for line in text.splitlines():
            try:
                found.append(_from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                continue
        return found

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def _as_json(record: Outgoing) -> dict[str, object]:
    return {
        "topic": record.topic,
        "key": record.key.decode() if record.key is not None else None,
        "value": record.value.decode(),
        "headers": [[k, v.decode()] for k, v in record.headers],
    }


def _from_json(found: dict[str, object]) -> Outgoing:
    key, value, headers = found["key"], found["value"], found["headers"]
    if not isinstance(value, str) or not isinstance(headers, list):
        raise TypeError("not a spooled record")
    return Outgoing(
        str(found["topic"]),
        key.encode() if isinstance(key, str) else None,
        value.encode(),
        tuple((str(k), str(v).encode()) for k, v in headers),
    )
