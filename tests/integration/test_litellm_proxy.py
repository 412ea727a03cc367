"""LiteLLM's own proxy (1.108.7, from PyPI) bills through us with config only (issue 13):
an OpenAI client calls the proxy's mock deployments; our Kafka callback, named in its
config.yaml, publishes each call; the worker books it for the user linked to the caller;
and our price of each call equals the cost LiteLLM reports for it. A second copy of the
callback publishes every call again (LiteLLM may log a success twice): each books once.

The proxy runs in a venv of its own (`litellm_proxy.installed`, a few minutes the first
time on a machine), as a user runs it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.core.pricing import VENDOR_COST_EXPONENT
from pipeline.gateways.spool import Spool
from pipeline.ops.devstack.stack import restart_kafka
from tests.conftest import TestStack
from tests.integration import litellm_proxy
from tests.integration.pipeline_harness import PARTITIONS, REPO, Harness, wait_for
from tests.integration.test_api import Api, api, start_api, stop  # noqa: F401 (api: the fixture)
from tests.integration.test_pipeline import new_user

pytestmark = pytest.mark.integration

CATALOG = REPO / "data" / "litellm-model-prices-1.110.2.json"
COST_HEADER = "x-litellm-response-cost"


@dataclass
class Books:
    harness: Harness
    proxy: litellm_proxy.Proxy
    spool: Path
    users: dict[str, uuid.UUID]
    """Our user of each linked LiteLLM end user."""

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.proxy.url, api_key=self.proxy.master_key,
                             max_retries=0, timeout=30)  # fmt: skip

    def call(self, name: str, model: str, **options: Any) -> Decimal | None:
        """One chat call as end user `name`; the cost LiteLLM reports for it in its
        response header (none for a stream: its cost is known at the end)."""
        raw = self.client().chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "hello"}],
            user=end_user(self.harness, name), **options,
        )  # fmt: skip
        answer = raw.parse()
        if options.get("stream"):
            list(answer)  # read the stream to its end
        reported = raw.headers.get(COST_HEADER)
        return Decimal(reported).quantize(VENDOR_COST_EXPONENT) if reported else None

    def ledger(self, name: str) -> list[tuple[Any, ...]]:
        return self.harness.query(
            "SELECT model_id, status, input_tokens, output_tokens, cached_input_tokens, "
            "vendor_cost, gateway_cost_usd FROM token_usage_ledger WHERE user_id = %s "
            "ORDER BY request_started_at", self.users[name],
        )  # fmt: skip


def import_catalog(db: str) -> None:
    """Our prices from LiteLLM's own price map, in effect for the calls of the tests."""
    imported = CliRunner().invoke(
        main, ["prices", "import", "--litellm", str(CATALOG), "--effective-from",
               "2026-01-01T00:00:00+00:00"], env={"DATABASE_URL": db},
    )  # fmt: skip
    assert imported.exit_code == 0, imported.output


def link(db: str, external_id: str, user: uuid.UUID) -> None:
    linked = CliRunner().invoke(main, ["gateway-users", "link", "litellm", external_id, str(user)],
                                env={"DATABASE_URL": db})  # fmt: skip
    assert linked.exit_code == 0, linked.output


def end_user(harness: Harness, name: str) -> str:
    """The LiteLLM end user `name` of this module's run (runs share the broker)."""
    return f"{name}-{harness.tag}"


@pytest.fixture(scope="module")
def books(
    new_books: Callable[[], str], stack: TestStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Books]:
    command = litellm_proxy.installed()
    db = new_books()
    import_catalog(db)
    harness = Harness(db, stack.kafka_bootstrap)
    users = {name: new_user(harness, credits=1_000_000) for name in ("alice", "bob")}
    for name, user in users.items():
        link(db, end_user(harness, name), user)
    workdir = tmp_path_factory.mktemp("litellm")
    spool = workdir / "spool.jsonl"
    (workdir / "twice.py").write_text(litellm_proxy.SECOND_CALLBACK)
    twice = litellm_proxy.config(callbacks=(litellm_proxy.CALLBACK, "twice.handler"))
    harness.start_worker(workdir)
    try:
        proxy = litellm_proxy.start(command, workdir, twice, {
            "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap,
            "USAGE_TOPIC": harness.usage_topic, "DLQ_TOPIC": harness.dlq_topic,
            "TOPIC_PARTITIONS": str(PARTITIONS), "LITELLM_USER_SOURCE": "end_user",
            "LITELLM_SPOOL_PATH": str(spool),
        })  # fmt: skip
        try:
            yield Books(harness, proxy, spool, users)
        finally:
            proxy.stop()
    finally:
        harness.stop_worker()


def test_each_call_is_booked_for_its_linked_user_at_litellms_own_cost(books: Books) -> None:
    headers = {
        "plain": books.call("alice", "gpt-4o-mini"),
        "cached": books.call("alice", "gpt-4o-cached"),
        "stream": books.call(
            "bob", "gpt-4o-mini", stream=True, stream_options={"include_usage": True}
        ),
        "haiku": books.call("bob", "claude-haiku"),
    }
    with pytest.raises(openai.RateLimitError):
        books.call("alice", "rate-limited")
    books.call("eve", "gpt-4o-mini")  # not linked to any user of ours

    wait_for(lambda: len(books.ledger("alice")) == 3 and len(books.ledger("bob")) == 2, 60,
             "the proxy's calls booked")  # fmt: skip
    alice, bob = books.ledger("alice"), books.ledger("bob")
    assert [row[:5] for row in alice] == [
        ("gpt-4o-mini", "success", 10, 20, 0),
        ("gpt-4o", "success", 2000, 50, 1500),
        ("gpt-4o-mini", "error", 0, 0, 0),
    ]
    assert [row[:2] for row in bob] == [("gpt-4o-mini", "success"),
                                        ("claude-haiku-4-5-20251001", "success")]  # fmt: skip
    booked = [row for row in alice + bob if row[1] == "success"]
    # Our exact price of each call is the cost LiteLLM logged for it (its float, kept as
    # gateway_cost_usd), and the one its response header told the client.
    assert all(row[5] > 0 and row[5] == row[6].quantize(VENDOR_COST_EXPONENT) for row in booked)
    told = [header or row[5] for row, header in zip(booked, headers.values(), strict=True)]
    assert told == [row[5] for row in booked]
    assert headers["cached"] == Decimal("0.00362500")  # 500 + 1500 cached input, 50 output
    assert alice[2][5] == 0  # a failed call costs nothing

    # Both callbacks published every call: each booked once all the same.
    published = [json.loads(r.value or b"") for r in books.harness.read(books.harness.usage_topic)]
    assert sum(len(v) if isinstance(v, list) else 1 for v in published) == 2 * 6

    def both_dead_letters() -> list[Any]:
        found = books.harness.dead_letters()
        return found if len(found) == 2 else []

    dead = wait_for(both_dead_letters, 30, "eve's call dead-lettered by each callback")
    assert {d.reason for d in dead} == {"unknown_user"}
    assert all(repr(end_user(books.harness, "eve")) in d.detail for d in dead)
    assert not any(b'"messages"' in (d.value or b"") for d in dead)  # the prompt stays put


def test_calls_during_a_kafka_outage_are_spooled_and_booked_once_it_is_back(
    books: Books, stack: TestStack
) -> None:
    before = len(books.ledger("alice"))
    costs: list[Decimal | None] = []

    def while_down() -> None:
        costs.extend(books.call("alice", "gpt-4o-mini") for _ in range(3))  # answered anyway
        for spool in (books.spool, books.spool.with_suffix(".second")):  # each callback's
            wait_for(lambda s=spool: s.is_file() and len(s.read_text().splitlines()) == 3,
                     60, f"the three calls spooled to {spool.name}")  # fmt: skip

    restart_kafka(stack.settings, while_down)
    wait_for(lambda: len(books.ledger("alice")) == before + 3, 90, "the spooled calls booked")
    wait_for(lambda: not Spool(books.spool).pending(), 30, "the spool replayed")
    assert [row[5] for row in books.ledger("alice")[before:]] == costs
    assert "records spooled to" in books.proxy.log_text()
    assert "replayed 3 spooled records" in books.proxy.log_text()


def test_generic_api_batches_are_ingested_by_the_gateway_api_and_booked(
    api: Api,  # noqa: F811 (the fixture imported above)
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """No code in the proxy: LiteLLM's own generic_api logger POSTs its batches to
    /v1/ingest/litellm with an ingest key."""
    import_catalog(api.db)
    user = new_user(api.harness, credits=1_000_000)
    link(api.db, end_user(api.harness, "carol"), user)
    workdir = tmp_path_factory.mktemp("litellm-generic")
    with ExitStack() as running:
        url, ingest = start_api(api.db, api.api_db, api.harness, workdir / "api.log",
                                LITELLM_USER_SOURCE="end_user")  # fmt: skip
        running.callback(stop, ingest)
        proxy_config = litellm_proxy.config(callbacks=(), generic_api={
            "endpoint": f"{url}/v1/ingest/litellm", "log_format": "json_array",
            "headers": {"Authorization": f"Bearer {api.tokens['ingest']}"},
        })  # fmt: skip
        proxy = litellm_proxy.start(litellm_proxy.installed(), workdir, proxy_config, {
            "DEFAULT_BATCH_SIZE": "2", "DEFAULT_FLUSH_INTERVAL_SECONDS": "1",
        })  # fmt: skip
        running.callback(proxy.stop)
        books = Books(api.harness, proxy, workdir / "unused", {"carol": user})
        costs = [books.call("carol", "gpt-4o-mini"), books.call("carol", "gpt-4o-cached")]
        api.harness.start_worker(workdir)
        running.callback(api.harness.stop_worker)
        wait_for(lambda: len(books.ledger("carol")) == 2, 60, "the generic_api batch booked")
    booked = books.ledger("carol")
    assert [(r[0], r[5]) for r in booked] == [("gpt-4o-mini", costs[0]), ("gpt-4o", costs[1])]
    assert all(r[5] == r[6].quantize(VENDOR_COST_EXPONENT) for r in booked)
