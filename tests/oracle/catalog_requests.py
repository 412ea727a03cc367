"""Random chat requests over every model we import, priced our way, in the oracle's shape.

`catalog_models()` is every entry `pipeline.money.catalog` imports from data/, with the
`litellm_provider` the oracle needs; `random_requests(models, seed)` a seeded list of
request dicts (tests/oracle/litellm_oracle.py documents the fields); `our_cost(model,
request)` our exact cost (the tariff's lines, unrounded) and `seed_cost(model, request)`
what the seed's four columns alone charge (the pricing before price components).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pipeline.core.events import ServiceTier
from pipeline.core.tariff import Tariff, Usage
from pipeline.money.catalog import CatalogEntry, load_litellm
from tests.oracle.litellm_oracle import COUNTS
from tests.oracle.venv import CATALOG

TIERS = tuple(t.value for t in ServiceTier)


@dataclass(frozen=True, slots=True)
class Model:
    key: str
    """The catalog key (our vendor_model_id)."""
    provider: str
    """Its litellm_provider."""
    entry: CatalogEntry
    tariff: Tariff
    seed: Tariff
    """The seed's four columns alone."""
    thresholds: tuple[int, ...]
    """Every prompt-size threshold of its components, ascending."""


def catalog_models() -> list[Model]:
    """Every model the importer takes from the catalog, in catalog order."""
    spec = json.loads(CATALOG.read_text(encoding="utf-8"))
    models = []
    for entry in load_litellm(CATALOG).entries:
        p = entry.price
        columns = (p.input_per_1k, p.output_per_1k, p.cache_input_per_1k, p.cache_hit_per_1k)
        models.append(
            Model(
                key=entry.vendor_model_id,
                provider=str(spec[entry.vendor_model_id]["litellm_provider"]),
                entry=entry,
                tariff=Tariff.of(*columns, p.components),
                seed=Tariff.of(*columns),
                thresholds=tuple(sorted({r.above_tokens for r in p.components if r.above_tokens})),
            )
        )
    return models


def _prompt_size(model: Model, rng: random.Random) -> int:
    """Mostly short prompts; near a threshold of the model's half the time it has one."""
    if model.thresholds and rng.random() < 0.5:
        return max(
            1, rng.choice(model.thresholds) + rng.choice((-1, 0, 1, 2, rng.randint(3, 60_000)))
        )
    return int(10 ** rng.uniform(0, 5.3))


def random_request(model: Model, tier: str, rng: random.Random, ident: str) -> dict[str, Any]:
    """One request with random counts that add up as contract v1 says they must."""
    prompt = _prompt_size(model, rng)
    left = prompt
    counts = dict.fromkeys(COUNTS, 0)
    counts["input_tokens"] = prompt
    for name, share in (("cached_input_tokens", 0.6), ("cache_write_tokens", 0.4),
                        ("audio_input_tokens", 0.3), ("image_input_tokens", 0.3)):  # fmt: skip
        if left and rng.random() < 0.5:
            counts[name] = rng.randint(0, int(left * share))
            left -= counts[name]
    if counts["cache_write_tokens"] and rng.random() < 0.5:
        counts["cache_write_1h_tokens"] = rng.randint(0, counts["cache_write_tokens"])
    output = int(10 ** rng.uniform(0, 4.3))
    counts["output_tokens"] = output
    if rng.random() < 0.4:
        counts["reasoning_tokens"] = rng.randint(0, output)
    if rng.random() < 0.3:
        counts["audio_output_tokens"] = rng.randint(0, output - counts["reasoning_tokens"])
    if rng.random() < 0.2:
        counts["web_search_requests"] = rng.randint(1, 4)
    return {"id": ident, "model": model.key, "provider": model.provider,
            "service_tier": tier, **counts}  # fmt: skip


def random_requests(models: list[Model], seed: int, per_tier: int = 1) -> list[dict[str, Any]]:
    """`per_tier` random requests at each service tier for every model."""
    rng = random.Random(seed)
    return [
        random_request(model, tier, rng, f"{n}:{tier}:{i}")
        for n, model in enumerate(models)
        for tier in TIERS
        for i in range(per_tier)
    ]


def usage_of(request: dict[str, Any]) -> Usage:
    return Usage(
        request["input_tokens"], request["output_tokens"], request["cached_input_tokens"],
        request["cache_write_tokens"], request["cache_write_1h_tokens"],
        request["reasoning_tokens"], request["audio_input_tokens"],
        request["image_input_tokens"], request["audio_output_tokens"],
        request["web_search_requests"], ServiceTier(request["service_tier"]),
    )  # fmt: skip


def our_cost(model: Model, request: dict[str, Any]) -> Decimal:
    """Our exact cost of the request (before the ledger's rounding to 8 decimals)."""
    return sum((line.usd for line in model.tariff.lines(usage_of(request))), Decimal(0))


def seed_cost(model: Model, request: dict[str, Any]) -> Decimal:
    """What the seed's four prices charged before price components: every count but the
    four plain ones ignored, at the standard tier and base price."""
    plain = usage_of(request)._replace(
        cache_write_1h_tokens=0, reasoning_tokens=0, audio_input_tokens=0,
        image_input_tokens=0, audio_output_tokens=0, web_search_requests=0,
        service_tier=ServiceTier.STANDARD,
    )  # fmt: skip
    return sum((line.usd for line in model.seed.lines(plain)), Decimal(0))
