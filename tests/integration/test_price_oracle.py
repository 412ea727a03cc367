"""Our prices against LiteLLM's own cost calculator (the release whose price map we import),
for random requests over every model we import: equal to 1e-8 USD unless a listed cause
(tests/oracle/causes.py, justified in docs/litellm-pricing-rules.md) explains the difference,
by reproducing LiteLLM's number once LiteLLM's behaviour is imitated.

Needs no servers; the first run builds the oracle's venv (`pip install litellm==<catalog
release>`, about a minute). ORACLE_SEED picks another sample (default 14).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from decimal import Decimal

import pytest

from tests.oracle import litellm_cost_details
from tests.oracle.catalog_requests import catalog_models, our_cost, random_requests, seed_cost
from tests.oracle.causes import CAUSES, explain
from tests.oracle.venv import CATALOG

TOLERANCE = Decimal("1e-8")
SEED = int(os.environ.get("ORACLE_SEED", "14"))


def agrees(ours: Decimal | None, theirs: str | None) -> bool:
    return ours is not None and theirs is not None and abs(ours - Decimal(theirs)) <= TOLERANCE


@pytest.fixture(scope="module")
def verdicts() -> dict[str, Counter[str]]:
    catalog = json.loads(CATALOG.read_text(encoding="utf-8"))
    models = catalog_models()
    requests = random_requests(models, seed=SEED, per_tier=1)
    answers = litellm_cost_details(requests)
    found: dict[str, Counter[str]] = {
        "before": Counter(),
        "after": Counter(),
        "unexplained": Counter(),
    }
    for request in requests:
        model, answer = models[int(request["id"].split(":")[0])], answers[request["id"]]
        found["before"][
            "agree" if agrees(seed_cost(model, request), answer["cost"]) else "differ"
        ] += 1
        if agrees(our_cost(model, request), answer["cost"]):
            found["after"]["agree"] += 1
            continue
        causes, imitated = explain(model, request, answer, catalog)
        if causes and (answer["cost"] is None or agrees(imitated, answer["cost"])):
            found["after"][" + ".join(causes)] += 1
        else:
            found["unexplained"][json.dumps({**request, "litellm": answer["cost"],
                                             "error": answer["error"], "ours": str(imitated)})] += 1  # fmt: skip
    total = len(requests)
    print(
        f"\n{total} requests over {len(models)} models, seed {SEED}; agreement to {TOLERANCE} USD:"
    )
    print(f"  before (the seed's four prices): {found['before']['agree'] / total:.1%}")
    for verdict, n in found["after"].most_common():
        print(f"  {n:6} {n / total:6.1%}  {verdict}")
    return found


def test_every_difference_from_litellm_has_a_listed_cause(
    verdicts: dict[str, Counter[str]],
) -> None:
    assert not verdicts["unexplained"], "\n".join(list(verdicts["unexplained"])[:20])


def test_every_listed_cause_still_occurs(verdicts: dict[str, Counter[str]]) -> None:
    seen = {cause for verdict in verdicts["after"] for cause in verdict.split(" + ")}
    assert set(CAUSES) - seen == set(), "a cause no request shows: drop it from the list"


def test_agreement_is_far_above_the_seed_prices(verdicts: dict[str, Counter[str]]) -> None:
    total = sum(verdicts["after"].values())
    assert verdicts["after"]["agree"] / total >= 0.9
    assert verdicts["after"]["agree"] > verdicts["before"]["agree"] + total // 5
