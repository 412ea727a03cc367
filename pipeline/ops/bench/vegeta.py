"""The load tool of `bench api`: vegeta (github.com/tsenart/vegeta, MIT, Go), an open-loop
HTTP load generator. It sends each request at its scheduled moment whatever the answers
before it (a new worker when every worker is busy, up to `connections`), and times it on
its own threads, so a late answer is the API's and not the client's: our own aiohttp client
read a p99 about 10 ms higher against the same API at the same rate (docs/benchmarks.md).
k6, the tool the seed names, is AGPL-licensed and not for this project.

`binary()` finds vegeta ($VEGETA, the PATH, Go's bin directory) or installs the pinned
version with `go install` from the Go module proxy. A phase is a targets file (JSON lines,
vegeta's `-format=json`), an `attack` writing vegeta's results, then `samples`, which
decodes them (`vegeta encode -to=json`) into latency and status per route.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

MODULE = "github.com/tsenart/vegeta/v12"
VERSION = "v12.13.0"
CHECK_ROUTES = ("balance", "entitlement")
INGEST_ROUTE = "events"
REQUEST_TIMEOUT = "30s"
NO_TARGETS = "no targets to attack"
"""The result vegeta adds when a lazily read targets file runs out (not a request)."""


class VegetaMissing(Exception):
    """Neither vegeta nor Go to install it."""


def binary(progress: Callable[[str], None] = lambda _: None) -> Path:
    """vegeta's path: $VEGETA, the PATH, Go's bin directory, else `go install`ed there."""
    if explicit := os.environ.get("VEGETA"):
        return Path(explicit)
    if found := shutil.which("vegeta"):
        return Path(found)
    go = shutil.which("go")
    if go is None:
        raise VegetaMissing(
            f"vegeta not found and no Go to install it: install Go, or `go install "
            f"{MODULE}@{VERSION}` elsewhere and set VEGETA to its path"
        )
    gobin = subprocess.run([go, "env", "GOBIN"], capture_output=True, text=True, check=True)
    gopath = subprocess.run([go, "env", "GOPATH"], capture_output=True, text=True, check=True)
    bin_dir = Path(gobin.stdout.strip() or Path(gopath.stdout.strip()) / "bin")
    path = bin_dir / "vegeta"
    if not path.exists():
        progress(f"vegeta: go install {MODULE}@{VERSION} (from the Go module proxy)")
        done = subprocess.run([go, "install", f"{MODULE}@{VERSION}"], capture_output=True,
                              text=True)  # fmt: skip
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise VegetaMissing(f"go install {MODULE}@{VERSION} failed: {last}")
    return path


def _target(method: str, url: str, token: str, body: bytes | None = None) -> str:
    target: dict[str, Any] = {"method": method, "url": url,
                              "header": {"Authorization": [f"Bearer {token}"]}}  # fmt: skip
    if body is not None:
        target["body"] = base64.b64encode(body).decode()
        target["header"]["Content-Type"] = ["application/json"]
    return json.dumps(target)


def write_check_targets(
    path: Path, base_url: str, token: str, users: Sequence[str], credits: int, count: int,
    seed: int,
) -> None:  # fmt: skip
    """`count` checks of random users, balance and entitlement in turn."""
    rng = random.Random(seed)
    base = f"{base_url}/v1/users/"
    suffix = ("/balance", f"/entitlement?credits={credits}")
    lines = (_target("GET", base + rng.choice(users) + suffix[k % 2], token) for k in range(count))
    path.write_text("\n".join(lines) + "\n")


def write_ingest_targets(path: Path, base_url: str, token: str, bodies: Iterable[bytes]) -> None:
    """One POST /v1/events per body, in order."""
    url = f"{base_url}/v1/events"
    path.write_text("".join(_target("POST", url, token, body) + "\n" for body in bodies))


@dataclass(frozen=True)
class Attack:
    targets: Path
    rate: float
    """Requests per second."""
    connections: int
    """At most this many requests in flight (vegeta's workers) and connections open."""
    seconds: float | None = None
    """None: until the targets run out (read lazily, each once)."""
    keep_bodies: bool = False

    def command(self, vegeta: Path, out: Path) -> list[str]:
        per_second = f"{round(self.rate * 1000)}/1000s"  # an integer count per period
        return [
            str(vegeta), "attack", "-format=json", f"-targets={self.targets}",
            f"-rate={per_second}", f"-max-workers={self.connections}",
            f"-connections={self.connections}", f"-max-connections={self.connections}",
            f"-timeout={REQUEST_TIMEOUT}", f"-max-body={-1 if self.keep_bodies else 0}",
            f"-output={out}",
            *([f"-duration={self.seconds}s"] if self.seconds is not None else ["-lazy"]),
        ]  # fmt: skip


@dataclass
class Samples:
    """Per route: each request's latency, status (0: it failed, its error counted in
    `exceptions`) and answer body (if kept), in the order vegeta sent them."""

    latency_ms: dict[str, list[float]] = field(default_factory=dict)
    status: dict[str, list[int]] = field(default_factory=dict)
    exceptions: dict[str, Counter[str]] = field(default_factory=dict)
    bodies: dict[str, list[bytes]] = field(default_factory=dict)
    seconds: float = 0.0
    """From the first request sent to the last answer."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "routes": {
                route: {
                    "latency_ms": [round(v, 3) for v in self.latency_ms[route]],
                    "status": self.status[route],
                    "exceptions": dict(self.exceptions[route]),
                }
                for route in self.status
            },
        }


def route_of(url: str) -> str:
    """balance, entitlement or events, from a target's URL."""
    path = url.split("?", 1)[0]
    return path.rsplit("/", 1)[-1]


def _instant(stamp: str) -> float:
    """Seconds since the epoch of vegeta's RFC 3339 timestamp (nanoseconds cut to micro)."""
    head, dot, rest = stamp.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        stamp = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"
    return datetime.fromisoformat(stamp).timestamp()


def parse(lines: Iterable[str]) -> Samples:
    """Samples of vegeta's results as `vegeta encode -to=json` writes them (one a line)."""
    samples = Samples()
    first, last = float("inf"), float("-inf")
    for line in lines:
        if not line.strip():
            continue
        result = json.loads(line)
        if result["error"] == NO_TARGETS and not result["url"]:
            continue
        route = route_of(result["url"])
        latency_ms = result["latency"] / 1e6
        code = int(result["code"])
        sent = _instant(result["timestamp"])
        first, last = min(first, sent), max(last, sent + latency_ms / 1000)
        samples.latency_ms.setdefault(route, []).append(latency_ms)
        samples.status.setdefault(route, []).append(code)
        failed = samples.exceptions.setdefault(route, Counter())
        if code == 0:
            failed[_error_kind(result["error"])] += 1
        body = result.get("body")
        samples.bodies.setdefault(route, []).append(base64.b64decode(body) if body else b"")
    samples.seconds = max(0.0, last - first) if samples.status else 0.0
    return samples


def _error_kind(error: str) -> str:
    """A failed request's error without its URL and addresses (`Get "http://...": dial tcp
    ...: connect: connection refused` -> `connection refused`)."""
    return error.rsplit(": ", 1)[-1] or "error"


def samples(vegeta: Path, results: Path) -> Samples:
    encoded = subprocess.run([str(vegeta), "encode", "-to=json", str(results)],
                             capture_output=True, text=True, check=True)  # fmt: skip
    return parse(encoded.stdout.splitlines())


def accepted_request_ids(bodies: Iterable[bytes]) -> set[str]:
    """The request ids the API answered `accepted` in POST /v1/events answers."""
    ids: set[str] = set()
    for body in bodies:
        try:
            answers = json.loads(body)["results"]
        except (ValueError, KeyError, TypeError):
            continue
        ids.update(a["request_id"] for a in answers if a.get("status") == "accepted")
    return ids
