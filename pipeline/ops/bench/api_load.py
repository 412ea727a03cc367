"""The load client of `bench api`: one phase against the gateway API, in a process of its
own, so that the requests it times share an event loop with neither the API nor the bench
driver (which publishes the background stream meanwhile).

Why a purpose-written aiohttp client: k6, the tool the seed names, is AGPL-licensed and not
for this project; vegeta would bring a Go toolchain into CI for one benchmark; locust runs
a greenlet per user and costs more per request than the route it times. aiohttp is here
already (the API serves with it), and the client runs on uvloop, like the API. Everything a
request needs is built before the clock starts: parsed URLs, the headers, the ingest
bodies (bytes read from a file, never encoded here), so a request costs a pick, the call
and two appends.

- checks: closed loop. `connections` clients each send their next request when the last
  one is answered (after `think_ms`), alternating balance and entitlement checks of random
  users, for `seconds`. Latency: from the send to the whole answer read. Each client
  starts at a random moment of its first think time, so the checks arrive spread out as
  gateways' do; started together, the clients kept sending in waves of all 1,000 at once,
  which timed a burst rather than 1,000 gateways (the figures before 2026-12-02 17:50).
- ingest: open loop. Body k leaves at start + k / rate whatever the answers, so a slow
  answer cannot lower the offered rate; latency runs from that scheduled time, so a stall
  anywhere (this process included) shows instead of hiding (coordinated omission).

One TCPConnector of `connections` connections, opened by a warm-up (a GET /healthz on each)
before the clock starts, so a phase does not time a thousand TCP handshakes at once. The
client prints READY on stdout once warm, and writes its samples (per route, each request's
latency and status, 0 for an exception) as JSON at the end.

Usage: ``python -m pipeline.ops.bench.api_load PLAN.json SAMPLES.json``
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import uvloop
from yarl import URL

CHECK_ROUTES = ("balance", "entitlement")
INGEST_ROUTE = "events"
READY = "ready"
REQUEST_TIMEOUT_SECONDS = 30.0
JSON_BODY = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class LoadPlan:
    kind: Literal["checks", "ingest"]
    base_url: str
    token: str
    connections: int
    seconds: float = 0.0
    """checks: how long the clients loop."""
    users: tuple[str, ...] = ()
    """checks: the user ids to pick from."""
    credits: int = 100
    """checks: what an entitlement check asks for."""
    think_ms: float = 0.0
    """checks: a client's pause between an answer and its next request."""
    seed: int = 1
    bodies: str = ""
    """ingest: the file of bodies, one JSON array per line (`write_bodies`)."""
    rate: float = 0.0
    """ingest: bodies per second."""

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def read(cls, path: Path) -> LoadPlan:
        data = json.loads(path.read_text())
        return cls(**data | {"users": tuple(data["users"])})


def arrays(lines: Sequence[bytes], size: int) -> list[bytes]:
    """Consecutive events as JSON arrays of up to `size`; the lines are compact JSON."""
    return [b"[" + b",".join(lines[i : i + size]) + b"]" for i in range(0, len(lines), size)]


def write_bodies(path: Path, bodies: Sequence[bytes]) -> None:
    """One body a line: compact JSON holds no newline."""
    path.write_bytes(b"\n".join(bodies) + b"\n")


@dataclass
class Samples:
    latency_ms: dict[str, list[float]] = field(default_factory=dict)
    status: dict[str, list[int]] = field(default_factory=dict)
    """0: the request raised (counted in `exceptions` by type)."""
    exceptions: dict[str, Counter[str]] = field(default_factory=dict)
    seconds: float = 0.0
    """From the clock's start to the last answer."""

    def route(self, name: str, size: int = 0) -> tuple[list[float], list[int], Counter[str]]:
        """The latency, status and exception lists of route `name` (`size` long at first)."""
        return (
            self.latency_ms.setdefault(name, [0.0] * size),
            self.status.setdefault(name, [0] * size),
            self.exceptions.setdefault(name, Counter()),
        )

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


async def _answer(request: Any, exceptions: Counter[str]) -> int:
    """The status of one request read to its end; 0 if it raised."""
    try:
        async with request as response:
            await response.read()
            return int(response.status)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        exceptions[type(exc).__name__] += 1
        return 0


async def _checks(session: aiohttp.ClientSession, plan: LoadPlan, samples: Samples) -> None:
    base = plan.base_url + "/v1/users/"
    urls = (
        [URL(f"{base}{user}/balance", encoded=True) for user in plan.users],
        [URL(f"{base}{user}/entitlement?credits={plan.credits}", encoded=True)
         for user in plan.users],
    )  # fmt: skip
    latency, status, failed = zip(*map(samples.route, CHECK_ROUTES), strict=True)
    think = plan.think_ms / 1000
    began = time.perf_counter()
    deadline = began + plan.seconds

    async def client(index: int) -> None:
        rng = random.Random(plan.seed * 1_000_003 + index)
        route, users = index % 2, len(plan.users)
        await asyncio.sleep(rng.uniform(0, think))
        while (sent := time.perf_counter()) < deadline:
            answer = await _answer(session.get(urls[route][rng.randrange(users)]),
                                   failed[route])  # fmt: skip
            latency[route].append((time.perf_counter() - sent) * 1000)
            status[route].append(answer)
            route ^= 1
            if think:
                await asyncio.sleep(think)

    await asyncio.gather(*(client(i) for i in range(plan.connections)))
    samples.seconds = time.perf_counter() - began


async def _ingest(
    session: aiohttp.ClientSession, plan: LoadPlan, bodies: list[bytes], samples: Samples
) -> None:
    url = URL(plan.base_url + "/v1/events", encoded=True)
    latency, status, failed = samples.route(INGEST_ROUTE, len(bodies))

    async def send(k: int, due: float) -> None:
        answer = await _answer(session.post(url, data=bodies[k], headers=JSON_BODY), failed)
        latency[k] = (time.perf_counter() - due) * 1000
        status[k] = answer

    began = time.perf_counter()
    sending = []
    for k in range(len(bodies)):
        due = began + k / plan.rate
        if (wait := due - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        sending.append(asyncio.create_task(send(k, due)))
    await asyncio.gather(*sending)
    samples.seconds = time.perf_counter() - began


async def run(plan: LoadPlan) -> Samples:
    """Warm up `plan.connections` connections, say READY, run the phase."""
    bodies = Path(plan.bodies).read_bytes().splitlines() if plan.kind == "ingest" else []
    samples = Samples()
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=plan.connections),
        headers={"Authorization": f"Bearer {plan.token}"},
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS),
    ) as session:
        healthz = URL(plan.base_url + "/healthz", encoded=True)
        warm: Counter[str] = Counter()
        await asyncio.gather(*(_answer(session.get(healthz), warm)
                               for _ in range(plan.connections)))  # fmt: skip
        print(READY, flush=True)
        if plan.kind == "checks":
            await _checks(session, plan, samples)
        else:
            await _ingest(session, plan, bodies, samples)
    return samples


def main(argv: Sequence[str]) -> int:
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    plan = LoadPlan.read(Path(argv[1]))
    samples = uvloop.run(run(plan))  # a cheaper loop per request, as the API's
    Path(argv[2]).write_text(json.dumps(samples.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
