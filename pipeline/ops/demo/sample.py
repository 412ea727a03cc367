"""A realistic, reproducible sample of gateway traffic for the demo and the tests.

Users of several tiers (one BYOK), heavy-tailed activity, the seed's models with cache
tokens, both provider `usage` shapes, redelivered duplicates and a few bad events. The
generator is pure: same seed, same events.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

DEMO_NAMESPACE = uuid.UUID("d3e0d3e0-0000-4000-8000-000000000000")
MODELS = (
    ("openai", "gpt-4o"),
    ("openai", "gpt-4-turbo"),
    ("anthropic", "claude-3-5-sonnet"),
    ("google", "gemini-2-0-flash"),
)


@dataclass(frozen=True, slots=True)
class DemoUser:
    email: str
    tier: str | None
    """Subscription tier, or None for no subscription (free)."""
    byok: bool
    credits: int
    weight: float
    """Relative activity: a few users send most of the traffic."""

    @property
    def id(self) -> uuid.UUID:
        return uuid.uuid5(DEMO_NAMESPACE, self.email)


DEMO_USERS = (
    DemoUser("ada@demo.example", "enterprise_max", False, 5_000_000, 8.0),
    DemoUser("bo@demo.example", "pro_max", False, 1_000_000, 4.0),
    DemoUser("cy@demo.example", "pro", False, 300_000, 2.0),
    DemoUser("di@demo.example", "pro", False, 20_000, 1.0),
    DemoUser("eli@demo.example", None, False, 2_000, 0.5),
    DemoUser("fay@demo.example", "perpetual", True, 0, 1.5),
)


@dataclass(frozen=True, slots=True)
class Sample:
    lines: list[bytes]
    unique_valid: int
    duplicates: int
    bad: int


def generate(
    count: int,
    now: datetime,
    seed: int = 7,
    users: tuple[DemoUser, ...] = DEMO_USERS,
    duplicate_rate: float = 0.05,
    bad_rate: float = 0.01,
) -> Sample:
    """`count` events: unique valid ones, redelivered duplicates and bad ones."""
    rng = random.Random(seed)
    weights = [u.weight for u in users]
    lines: list[bytes] = []
    valid: list[bytes] = []
    duplicates = bad = 0
    for _ in range(count):
        roll = rng.random()
        if valid and roll < duplicate_rate:
            lines.append(rng.choice(valid))
            duplicates += 1
        elif roll < duplicate_rate + bad_rate:
            # BYOK usage needs no price, so an unknown model is no error for those users.
            payers = [u for u in users if not u.byok]
            lines.append(_bad_event(rng, rng.choice(payers), now))
            bad += 1
        else:
            line = json.dumps(_event(rng, rng.choices(users, weights)[0], now)).encode()
            valid.append(line)
            lines.append(line)
    return Sample(lines, len(valid), duplicates, bad)


def _event(rng: random.Random, user: DemoUser, now: datetime) -> dict[str, Any]:
    provider, model = rng.choice(MODELS)
    started = now - timedelta(seconds=rng.randint(5, 3600))
    completed = started + timedelta(milliseconds=rng.randint(150, 30_000))
    prompt = int(rng.paretovariate(1.2) * 400)
    output = int(rng.paretovariate(1.5) * 150)
    cached = rng.randint(0, prompt) if rng.random() < 0.4 else 0
    event: dict[str, Any] = {
        "request_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "user_id": str(user.id),
        "provider": provider,
        "model": model,
        "started_at": started.isoformat(),
        "completed_at": completed.isoformat(),
        "region": rng.choice(("us-east-1", "eu-west-1", "ap-south-1")),
    }
    if provider == "anthropic":
        write = rng.randint(0, prompt - cached) if rng.random() < 0.2 else 0
        event["usage"] = {
            "input_tokens": prompt - cached - write,
            "output_tokens": output,
            "cache_read_input_tokens": cached,
            "cache_creation_input_tokens": write,
        }
    elif provider == "openai" and rng.random() < 0.5:
        event["usage"] = {
            "prompt_tokens": prompt,
            "completion_tokens": output,
            "prompt_tokens_details": {"cached_tokens": cached},
        }
    else:
        event.update(input_tokens=prompt, output_tokens=output, cached_input_tokens=cached)
    if rng.random() < 0.02:
        event["status"] = "error"
        event["error_message"] = "upstream timeout"
    return event


def _bad_event(rng: random.Random, user: DemoUser, now: datetime) -> bytes:
    kind = rng.choice(("malformed", "schema", "unknown_model"))
    if kind == "malformed":
        return b'{"request_id": "truncated'
    event = _event(rng, user, now)
    if kind == "schema":
        event["output_tokens"] = -1
        event.pop("usage", None)
        event.setdefault("input_tokens", 10)
    else:
        event["model"] = "gpt-imaginary"
    return json.dumps(event).encode()
