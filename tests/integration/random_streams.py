"""Seeded random usage streams for the books tests, and an independent model of their price.

`random_stream` takes unique valid events from `pipeline.ops.demo.sample` and mixes in what a real
gateway fleet sends: late events (started days ago), identical redeliveries, redeliveries
in the other `usage` shape, conflicting duplicates (same id, different payload) and bad
events of every kind; then cuts the stream into chunks to publish at different times. It
is pure: the same seed gives the same bytes, and it says what each line must become.

`expected_credits` prices an event from the seed's reference rows with the money rules
of the README written out again, so the test checks the books against a second opinion
rather than against the code that wrote them.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal
from typing import Any

from pipeline.ops.demo.sample import DemoUser, generate
from pipeline.schema import seed

USD_PER_CREDIT = Decimal("0.001")
MAX_VENDOR_COST = Decimal("99.99999999")


@dataclass(frozen=True, slots=True)
class RandomStream:
    chunks: tuple[tuple[bytes, ...], ...]
    """Lines to publish, chunk by chunk, in order."""
    valid: dict[str, dict[str, Any]]
    """request_id -> the event the books must hold (its first delivery)."""
    rejected: dict[bytes, str]
    """Raw line -> the dead-letter reason it must get."""
    redeliveries: int
    """Identical or other-shape copies of valid events: no-ops."""


def flat_tokens(event: dict[str, Any]) -> tuple[int, int, int, int]:
    """(input, output, cached input, cache writes) of an event in any of the three shapes."""
    usage = event.get("usage")
    if usage is None:
        return (event["input_tokens"], event["output_tokens"],
                event.get("cached_input_tokens", 0), event.get("cache_write_tokens", 0))  # fmt: skip
    if "prompt_tokens" in usage:
        cached = usage.get("prompt_tokens_details", {}).get("cached_tokens", 0)
        return usage["prompt_tokens"], usage["completion_tokens"], cached, 0
    read = usage.get("cache_read_input_tokens", 0)
    write = usage.get("cache_creation_input_tokens", 0)
    return usage["input_tokens"] + read + write, usage["output_tokens"], read, write


def other_shape(event: dict[str, Any]) -> dict[str, Any] | None:
    """The same request in another shape (flat <-> OpenAI `usage`); None if there is none."""
    inp, out, cached, write = flat_tokens(event)
    flat = {k: v for k, v in event.items()
            if k not in ("usage", "input_tokens", "output_tokens", "cached_input_tokens",
                         "cache_write_tokens")}  # fmt: skip
    if "usage" in event:
        return flat | {"input_tokens": inp, "output_tokens": out, "cached_input_tokens": cached,
                       "cache_write_tokens": write}  # fmt: skip
    if event["provider"] != "openai" or write:
        return None
    usage = {"prompt_tokens": inp, "completion_tokens": out,
             "prompt_tokens_details": {"cached_tokens": cached}}  # fmt: skip
    return flat | {"usage": usage}


def expected_charge(event: dict[str, Any], user: DemoUser) -> tuple[Decimal, int]:
    """(vendor cost in USD, credits) the money rules give `event` of `user`."""
    if user.byok:
        return Decimal(0), 0
    started = datetime.fromisoformat(event["started_at"])
    provider = next(p.name for p in seed.PROVIDERS if p.api_type == event["provider"])
    price = max(
        (p for p in seed.PRICES
         if (p.provider, p.model_name) == (provider, event["model"]) and p.effective_from <= started),
        key=lambda p: p.effective_from,
    )  # fmt: skip
    inp, out, cached, write = flat_tokens(event)
    hit = price.cache_hit_per_1k if price.cache_hit_per_1k is not None else price.input_per_1k
    cache_in = (price.cache_input_per_1k if price.cache_input_per_1k is not None
                else price.input_per_1k)  # fmt: skip
    usd = ((inp - cached - write) * price.input_per_1k + cached * hit + write * cache_in
           + out * price.output_per_1k) / 1000  # fmt: skip
    cost = usd.quantize(Decimal("0.00000001"), rounding=ROUND_HALF_EVEN)
    margin = next(m.margin_multiplier for m in seed.TIER_MARGINS if m.tier == (user.tier or "free"))
    credits = (cost * margin / USD_PER_CREDIT).quantize(Decimal(1), rounding=ROUND_CEILING)
    return cost, int(credits)


def random_stream(
    seed_value: int, unique: int, now: datetime, users: tuple[DemoUser, ...]
) -> RandomStream:
    """About `unique` valid requests among ~15% extra lines, in chunks of 1/2, 1/4, 1/4."""
    rng = random.Random(seed_value)
    by_id = {str(u.id): u for u in users}
    payers = [u for u in users if not u.byok and u.weight > 0]
    base = generate(unique, now, seed=seed_value, users=users, duplicate_rate=0, bad_rate=0)
    valid: dict[str, dict[str, Any]] = {}
    originals: list[bytes] = []
    for line in base.lines:
        event = json.loads(line)
        if expected_charge(event, by_id[event["user_id"]])[0] > MAX_VENDOR_COST:
            continue  # a heavy-tail monster: out of this test's scope (cost_out_of_range)
        if rng.random() < 0.2:  # late: started 1 to 6 days ago, still priced then
            shift = timedelta(days=rng.uniform(1, 6))
            for field in ("started_at", "completed_at"):
                event[field] = (datetime.fromisoformat(event[field]) - shift).isoformat()
            line = json.dumps(event).encode()
        valid[event["request_id"]] = event
        originals.append(line)

    # Position keys: original k at k; a copy or conflict of k lands anywhere after it.
    placed: list[tuple[float, bytes]] = [(float(k), line) for k, line in enumerate(originals)]
    n = len(originals)
    rejected: dict[bytes, str] = {}
    redeliveries = 0
    for _ in range(n // 10):
        k = rng.randrange(n)
        placed.append((rng.uniform(k + 0.01, n), originals[k]))
        redeliveries += 1
    for _ in range(n // 30):
        k = rng.randrange(n)
        other = other_shape(json.loads(originals[k]))
        if other is not None:
            placed.append((rng.uniform(k + 0.01, n), json.dumps(other).encode()))
            redeliveries += 1
    for _ in range(n // 40):
        k = rng.randrange(n)
        conflict = json.loads(originals[k])
        late = datetime.fromisoformat(conflict["completed_at"]) + timedelta(seconds=1)
        conflict["completed_at"] = late.isoformat()
        line = json.dumps(conflict).encode()
        placed.append((rng.uniform(k + 0.01, n), line))
        rejected[line] = "duplicate_conflict"
    for _ in range(n // 40):
        line, reason = _bad_line(rng, rng.choice(payers), now)
        placed.append((rng.uniform(0, n), line))
        rejected[line] = reason

    placed.sort(key=lambda p: p[0])
    lines = [line for _, line in placed]
    half, three_quarters = len(lines) // 2, 3 * len(lines) // 4
    split = (tuple(lines[:half]), tuple(lines[half:three_quarters]), tuple(lines[three_quarters:]))
    return RandomStream(split, valid, rejected, redeliveries)


def _bad_line(rng: random.Random, user: DemoUser, now: datetime) -> tuple[bytes, str]:
    marker = uuid.UUID(int=rng.getrandbits(128), version=4)
    started = now - timedelta(seconds=rng.randint(5, 600))
    event: dict[str, Any] = {
        "request_id": str(marker),
        "user_id": str(user.id),
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": rng.randint(1, 5000),
        "output_tokens": rng.randint(0, 2000),
        "started_at": started.isoformat(),
        "completed_at": (started + timedelta(seconds=3)).isoformat(),
    }
    kind = rng.choice(("malformed_json", "negative", "future", "unknown_user", "unknown_model"))
    if kind == "malformed_json":
        return f'{{"request_id": "{marker}", "user_'.encode(), "malformed_json"
    if kind == "negative":
        event["output_tokens"] = -rng.randint(1, 100)
    elif kind == "future":
        later = now + timedelta(hours=rng.uniform(1, 48))
        event["started_at"] = later.isoformat()
        event["completed_at"] = (later + timedelta(seconds=3)).isoformat()
    elif kind == "unknown_user":
        event["user_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    else:
        event["model"] = "gpt-imaginary"
    reason = "schema_violation" if kind in ("negative", "future") else kind
    return json.dumps(event).encode(), reason
