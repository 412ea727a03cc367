"""An append-only local file of records that could not be published yet, replayed in
order once Kafka takes records again (the LiteLLM callback's outage buffer).

One JSON object per line: topic, key, value and headers as text (our keys, values and
headers are UTF-8). `append` syncs the file before it returns, so a spooled record
survives the process. A replay `claim`s the file (renames it aside, so what is appended
meanwhile goes to a new one) and `release`s it once every claimed record has been
acknowledged; a crash in between replays the claim again: the books take each request once.
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
        self.claimed = path.with_name(path.name + ".replaying")

    def append(self, records: Sequence[Outgoing]) -> None:
        if not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps(_as_json(r)) + "\n" for r in records)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(lines)
            out.flush()
            os.fsync(out.fileno())

    def claim(self) -> list[Outgoing]:
        """The records to replay, oldest first: a claim a crash left unreleased, else the
        spool renamed aside (appends go on in a new file meanwhile)."""
        for _ in range(2):
            if self.claimed.exists():
                found = _read(self.claimed)
                if found:
                    return found
                self.claimed.unlink()  # only a torn line: nothing was spooled in it
            try:
                self.path.rename(self.claimed)
            except FileNotFoundError:
                return []
        return []

    def release(self) -> None:
        """Every claimed record has been acknowledged."""
        self.claimed.unlink(missing_ok=True)

    def pending(self) -> bool:
        return self.path.exists() or self.claimed.exists()


def _read(path: Path) -> list[Outgoing]:
    """The records of a spool file (a torn last line, from a crash while it was written,
    is left out: its record was never reported spooled)."""
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            found.append(_from_json(json.loads(line)))
        except (ValueError, KeyError, TypeError):
            continue
    return found


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
