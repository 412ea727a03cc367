"""The benchmark's gateway stream: a pure, reproducible generator.

Models are drawn from the LiteLLM price catalog (popular providers, Zipf-weighted within
each); users are heavy-tailed (a few send most requests); a share of requests carries
cache hits or writes, a few use the providers' own `usage` shapes, some arrive late (their
request started hours ago). Exactly ``round(count * duplicate_share)`` records are
redeliveries of an earlier record (same bytes) and ``round(count * malformed_share)`` are
malformed (truncated JSON or a schema violation), at seeded positions.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from pipeline.core import records
from pipeline.money.catalog import CatalogEntry
from pipeline.ops.demo.sample import DemoUser
from pipeline.stream.kafka_io import user_key

BENCH_CREDITS = 1_000_000_000
TIERS = ("free", "pro", "pro_max", "enterprise_pro", "enterprise_max")
"""Assigned round-robin to the bench users; `free` users have no subscription."""

PROVIDER_SHARE = {
    "openai": 0.35,
    "anthropic": 0.25,
    "google": 0.20,
    "azure": 0.08,
    "mistral": 0.05,
    "deepseek": 0.04,
    "groq": 0.03,
}
MODELS_PER_PROVIDER = 10
# Caps that keep the heaviest request far below NUMERIC(10,8)'s USD 99.99999999.
MAX_INPUT_PER_1K = Decimal("0.02")
MAX_OUTPUT_PER_1K = Decimal("0.08")
MAX_PROMPT_TOKENS = 100_000
MAX_OUTPUT_TOKENS = 16_000


@dataclass(frozen=True, slots=True)
class BenchModel:
    provider: str
    """The provider's api_type, as gateways send it."""
    model: str
    weight: float


@dataclass(frozen=True)
class Stream:
    """Records in publish order; ``request_ids[i]`` is None for a malformed record."""

    lines: list[bytes]
    keys: list[bytes | None]
    request_ids: list[uuid.UUID | None]
    unique_valid: int
    duplicates: int
    malformed: int
    late: int

    def valid_ids(self) -> set[uuid.UUID]:
        return {r for r in self.request_ids if r is not None}


@dataclass(frozen=True)
class Batched:
    """A stream as batch records: record i carries the stream positions `groups[i]`."""

    lines: list[bytes]
    keys: list[bytes | None]
    groups: list[list[int]]


def as_batch_records(stream: Stream, partitions: int, size: int) -> Batched:
    """The stream's records grouped as `usage-pipeline publish --batch` would: by the
    partition of their user, up to `size` events each; a line that is not JSON stays a
    record of its own."""
    keyed = [(user_key(line), line) for line in stream.lines]
    groups = records.partition_groups([key for key, _ in keyed], partitions, size)
    batched = records.batch_records(keyed, groups)
    return Batched([v for _, v in batched], [k for k, _ in batched], groups)


def pick_models(entries: Sequence[CatalogEntry], seed: int = 1) -> tuple[BenchModel, ...]:
    """Up to MODELS_PER_PROVIDER affordable chat models per popular provider, Zipf-weighted."""
    rng = random.Random(seed)
    chosen: list[BenchModel] = []
    for provider, share in PROVIDER_SHARE.items():
        names = sorted(
            e.model_name
            for e in entries
            if e.provider.api_type == provider
            and e.price.input_per_1k <= MAX_INPUT_PER_1K
            and e.price.output_per_1k <= MAX_OUTPUT_PER_1K
        )
        picked = rng.sample(names, min(MODELS_PER_PROVIDER, len(names)))
        norm = sum(1 / (rank + 1) for rank in range(len(picked)))
        chosen += [
            BenchModel(provider, name, share / (rank + 1) / norm)
            for rank, name in enumerate(picked)
        ]
    return tuple(chosen)


def make_users(count: int, skew: float = 1.1) -> tuple[DemoUser, ...]:
    """`count` users with Zipf(skew) activity (user 0 is the busiest), tiers round-robin,
    credits enough never to overdraw."""
    return tuple(
        DemoUser(
            f"bench-{i}@bench.example",
            None if TIERS[i % len(TIERS)] == "free" else TIERS[i % len(TIERS)],
            byok=False,
            credits=BENCH_CREDITS,
            weight=1 / (i + 1) ** skew,
        )
        for i in range(count)
    )


def generate(
    count: int,
    now: datetime,
    models: Sequence[BenchModel],
    users: Sequence[DemoUser],
    seed: int = 7,
    duplicate_share: float = 0.05,
    malformed_share: float = 0.01,
    late_share: float = 0.02,
) -> Stream:
    """`count` records: unique valid events, exact shares of redeliveries and malformed ones."""
    if count < 1 or not models or not users:
        raise ValueError("need at least one record, one model and one user")
    rng = random.Random(seed)
    duplicates = round(count * duplicate_share)
    malformed = round(count * malformed_share)
    kinds = ["v"] * (count - duplicates - malformed) + ["d"] * duplicates + ["m"] * malformed
    if kinds.count("v") < 1:
        raise ValueError("the shares leave no valid event")
    rng.shuffle(kinds)
    first_valid = kinds.index("v")  # a redelivery needs an earlier event to repeat
    kinds[0], kinds[first_valid] = kinds[first_valid], kinds[0]

    model_weights = [m.weight for m in models]
    user_weights = [u.weight for u in users]
    lines: list[bytes] = []
    keys: list[bytes | None] = []
    ids: list[uuid.UUID | None] = []
    valid_positions: list[int] = []
    late = 0
    for kind in kinds:
        if kind == "d":
            i = rng.choice(valid_positions)
            lines.append(lines[i])
            keys.append(keys[i])
            ids.append(ids[i])
            continue
        user = rng.choices(users, user_weights)[0]
        model = rng.choices(models, model_weights)[0]
        is_late = kind == "v" and rng.random() < late_share
        event = _event(rng, user, model, now, is_late)
        if kind == "m":
            lines.append(_malform(rng, event))
            keys.append(str(user.id).encode())
            ids.append(None)
            continue
        late += is_late
        valid_positions.append(len(lines))
        lines.append(json.dumps(event, separators=(",", ":")).encode())
        keys.append(str(user.id).encode())
        ids.append(uuid.UUID(event["request_id"]))
    return Stream(lines, keys, ids, len(valid_positions), duplicates, malformed, late)


def _event(
    rng: random.Random, user: DemoUser, model: BenchModel, now: datetime, late: bool
) -> dict[str, Any]:
    ago = rng.uniform(3600, 47 * 3600) if late else rng.uniform(1, 60)
    started = now - timedelta(seconds=ago)
    completed = started + timedelta(milliseconds=rng.randint(150, 30_000))
    prompt = min(int(rng.paretovariate(1.2) * 400), MAX_PROMPT_TOKENS)
    output = min(int(rng.paretovariate(1.5) * 150), MAX_OUTPUT_TOKENS)
    cached = rng.randint(0, prompt) if rng.random() < 0.4 else 0
    write = rng.randint(0, prompt - cached) if rng.random() < 0.1 else 0
    event: dict[str, Any] = {
        "request_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "user_id": str(user.id),
        "provider": model.provider,
        "model": model.model,
        "started_at": started.isoformat(),
        "completed_at": completed.isoformat(),
        "region": rng.choice(("us-east-1", "eu-west-1", "ap-south-1")),
    }
    shape = rng.random()
    if model.provider == "anthropic" and shape < 0.5:
        event["usage"] = {
            "input_tokens": prompt - cached - write,
            "output_tokens": output,
            "cache_read_input_tokens": cached,
            "cache_creation_input_tokens": write,
        }
    elif model.provider == "openai" and shape < 0.3 and write == 0:
        event["usage"] = {
            "prompt_tokens": prompt,
            "completion_tokens": output,
            "prompt_tokens_details": {"cached_tokens": cached},
        }
    else:
        event.update(
            input_tokens=prompt,
            output_tokens=output,
            cached_input_tokens=cached,
            cache_write_tokens=write,
        )
    if rng.random() < 0.02:
        event["status"] = "error"
        event["error_message"] = "upstream timeout"
    return event


def _malform(rng: random.Random, event: dict[str, Any]) -> bytes:
    if rng.random() < 0.5:
        return json.dumps(event).encode()[: rng.randint(1, 40)]
    event.pop("usage", None)
    event.update(input_tokens=10, output_tokens=-1)
    return json.dumps(event).encode()
