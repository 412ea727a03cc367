"""The gateway API through real HTTP against the test stack (issue 12): `usage-pipeline api`
runs as a process of its own, as its own api_reader login, with keys made by `api-keys`."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from openapi_spec_validator import validate

from pipeline.api import openapi, service
from pipeline.cli import main
from pipeline.ops import api_process, worker_process
from pipeline.ops.devstack.ports import free_port
from tests.integration.pipeline_harness import REPO, Harness, make_event, wait_for
from tests.integration.test_logins import as_login, grant, refused
from tests.integration.test_pipeline import new_user

pytestmark = pytest.mark.integration

MAX_EVENTS = 50


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


@dataclass
class Api:
    url: str
    db: str
    api_db: str
    """The API's own login (api_reader)."""
    harness: Harness
    process: subprocess.Popen[bytes]
    log: Path
    tokens: dict[str, str]

    def call(
        self, method: str, path: str, key: str | None = "admin", body: bytes | None = None,
        content_type: str = "application/json", token: str | None = None,
    ) -> Answer:  # fmt: skip
        request = urllib.request.Request(self.url + path, data=body, method=method)
        if body is not None:
            request.add_header("Content-Type", content_type)
        bearer = token if token is not None else self.tokens.get(key or "")
        if bearer:
            request.add_header("Authorization", f"Bearer {bearer}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return Answer(response.status, dict(response.headers), _parsed(response.read()))
        except urllib.error.HTTPError as error:
            return Answer(error.code, dict(error.headers), _parsed(error.read()))


def _parsed(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode()


def make_key(db: str, name: str, scope: str, *users: uuid.UUID) -> str:
    args = ["api-keys", "create", name, "--scope", scope]
    for user in users:
        args += ["--user", str(user)]
    result = CliRunner().invoke(main, args, env={"DATABASE_URL": db})
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]


def start_api(db: str, api_db: str, harness: Harness, log: Path, **env: str) -> tuple[str, Any]:
    port = free_port()
    environment = os.environ | harness.env() | {
        "DATABASE_URL": db, "API_DATABASE_URL": api_db, "API_PORT": str(port),
        "API_MAX_EVENTS": str(MAX_EVENTS), "API_MAX_BODY_BYTES": "65536",
    } | env  # fmt: skip
    process = api_process.start_api(environment, log, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    api_process.wait_answering(process, url, log, 60)
    return url, process


def stop(process: subprocess.Popen[bytes]) -> None:
    worker_process.stop_worker(process)


@pytest.fixture(scope="module")
def api(
    new_books: Callable[[], str], kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    db = new_books()
    login = f"api_{uuid.uuid4().hex[:8]}"
    assert grant(db, login, "api_reader")[0] == 0
    harness = Harness(db, kafka_bootstrap)
    log = tmp_path_factory.mktemp("api") / "api.log"
    tokens = {scope: make_key(db, f"k-{scope}", scope) for scope in ("ingest", "read", "admin")}
    api_db = as_login(db, login)
    url, process = start_api(db, api_db, harness, log)
    try:
        yield Api(url, db, api_db, harness, process, log, tokens)
    finally:
        stop(process)
        harness.stop_worker()
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("DROP OWNED BY {}").format(psycopg.sql.Identifier(login)))
            conn.execute(psycopg.sql.SQL("DROP ROLE {}").format(psycopg.sql.Identifier(login)))


def is_problem(answer: Answer, status: int, slug: str) -> bool:
    return (
        answer.status == status
        and answer.headers.get("Content-Type", "").startswith("application/problem+json")
        and answer.body["type"] == f"urn:usage-pipeline:problem:{slug}"
        and answer.body["status"] == status
    )


def test_balance_and_entitlement_answer_exactly(api: Api) -> None:
    user = new_user(api.harness, credits=1_500)
    balance = api.call("GET", f"/v1/users/{user}/balance", "read")
    assert balance.status == 200, balance.body
    assert balance.body["balance"] == 1_500 and balance.body["status"] == "ok"
    assert balance.body["low_balance_credits"] == 100
    yes = api.call("GET", f"/v1/users/{user}/entitlement?credits=1500", "read").body
    no = api.call("GET", f"/v1/users/{user}/entitlement?credits=1501", "read").body
    assert (yes["allowed"], yes["shortfall"]) == (True, 0)
    assert (no["allowed"], no["shortfall"]) == (False, 1)
    broke = new_user(api.harness, credits=0)
    assert api.call("GET", f"/v1/users/{broke}/balance").body["status"] == "exhausted"
    assert api.call("GET", f"/v1/users/{broke}/entitlement?credits=0").body["allowed"] is False


def test_each_error_is_a_problem_of_its_own_type(api: Api) -> None:
    user = new_user(api.harness, credits=10)
    assert is_problem(api.call("GET", "/v1/users/not-a-uuid/balance"), 400, "bad-request")
    assert is_problem(api.call("GET", f"/v1/users/{uuid.uuid4()}/balance"), 404, "unknown-user")
    assert is_problem(api.call("GET", f"/v1/users/{user}/balance", None), 401, "unauthorized")
    wrong = api.tokens["read"][:-4] + "AAAA"
    assert is_problem(api.call("GET", f"/v1/users/{user}/balance", token=wrong), 401,
                      "unauthorized")  # fmt: skip
    assert is_problem(api.call("GET", f"/v1/users/{user}/balance", "ingest"), 403, "forbidden")
    assert is_problem(api.call("POST", "/v1/events", "read", b"{}"), 403, "forbidden")
    assert is_problem(api.call("GET", f"/v1/users/{user}/entitlement", "read"), 400, "bad-request")
    assert is_problem(api.call("GET", f"/v1/users/{user}/usage?from=2026-02-01&to=2026-01-01"),
                      400, "bad-request")  # fmt: skip
    many = json.dumps([make_event(user) for _ in range(MAX_EVENTS + 1)]).encode()
    assert is_problem(api.call("POST", "/v1/events", "ingest", many), 413, "payload-too-large")
    huge = b"[" + b" " * 70_000 + b"]"
    assert is_problem(api.call("POST", "/v1/events", "ingest", huge), 413, "payload-too-large")
    assert is_problem(api.call("POST", "/v1/events", "ingest", b"x", "text/plain"), 415,
                      "unsupported-media-type")  # fmt: skip
    assert is_problem(api.call("POST", "/v1/events", "ingest", b"[1,"), 400, "bad-request")
    assert is_problem(api.call("GET", "/v1/nothing-here"), 404, "not-found")


def test_a_key_restricted_to_other_users_is_refused(api: Api) -> None:
    mine, theirs = new_user(api.harness, credits=5), new_user(api.harness, credits=5)
    token = make_key(api.db, f"tenant-{uuid.uuid4().hex[:6]}", "admin", mine)
    assert api.call("GET", f"/v1/users/{mine}/balance", token=token).status == 200
    assert is_problem(api.call("GET", f"/v1/users/{theirs}/balance", token=token), 403,
                      "forbidden")  # fmt: skip
    event = json.dumps(make_event(theirs)).encode()
    refused = api.call("POST", "/v1/events", body=event, token=token)
    assert is_problem(refused, 403, "forbidden") and refused.body["events"] == [0]


def test_a_revoked_key_stops_working(api: Api) -> None:
    user = new_user(api.harness, credits=5)
    name = f"gone-{uuid.uuid4().hex[:6]}"
    token = make_key(api.db, name, "read")
    assert api.call("GET", f"/v1/users/{user}/balance", token=token).status == 200
    result = CliRunner().invoke(main, ["api-keys", "revoke", name], env={"DATABASE_URL": api.db})
    assert result.exit_code == 0, result.output
    wait_for(lambda: api.call("GET", f"/v1/users/{user}/balance", token=token).status == 401,
             30, "the revoked key refused")  # fmt: skip
    listed = CliRunner().invoke(main, ["api-keys", "list"], env={"DATABASE_URL": api.db})
    assert name in listed.output and token not in listed.output


def test_ingest_answers_each_event_and_the_worker_books_the_good_ones_once(
    api: Api, tmp_path: Path
) -> None:
    user = new_user(api.harness, credits=100_000)
    good = [make_event(user) for _ in range(5)]
    bad = {**make_event(user), "input_tokens": -1}
    body = json.dumps([good[0], bad, *good[1:], "not an object"]).encode()
    answer = api.call("POST", "/v1/events", "ingest", body)
    assert answer.status == 202, answer.body
    assert (answer.body["accepted"], answer.body["rejected"]) == (5, 2)
    statuses = [(r["index"], r["status"], r.get("reason")) for r in answer.body["results"]]
    assert statuses == [(0, "accepted", None), (1, "rejected", "schema_violation"),
                        *[(i, "accepted", None) for i in range(2, 6)],
                        (6, "rejected", "schema_violation")]  # fmt: skip
    assert answer.body["results"][0]["request_id"] == good[0]["request_id"]
    again = "\n".join(json.dumps(e) for e in [good[0], good[1]]).encode()  # ingested twice
    twice = api.call("POST", "/v1/events", "ingest", again, "application/x-ndjson")
    assert twice.status == 202 and twice.body["accepted"] == 2
    api.harness.start_worker(tmp_path)
    try:
        api.harness.wait_booked([e["request_id"] for e in good])
    finally:
        api.harness.stop_worker()
    assert api.harness.booked([e["request_id"] for e in good]) == len(good)
    balance = api.call("GET", f"/v1/users/{user}/balance", "read").body["balance"]
    assert balance < 100_000
    day = good[0]["started_at"][:10]
    usage = api.call("GET", f"/v1/users/{user}/usage?from={day}&to={day}", "read")
    assert usage.status == 200 and usage.body["days"][0]["requests"] == len(good)
    assert api.harness.dead_letters() == []  # rejected events are answered, not published


def test_an_unreachable_broker_is_a_503_that_says_nothing_was_published(
    api: Api, tmp_path: Path
) -> None:
    closed = f"127.0.0.1:{free_port()}"
    log = tmp_path / "api-no-kafka.log"
    url, process = start_api(api.db, api.db, api.harness, log, KAFKA_BOOTSTRAP_SERVERS=closed,
                             API_PUBLISH_TIMEOUT_SECONDS="3")  # fmt: skip
    try:
        lonely = Api(url, api.db, api.db, api.harness, process, log, api.tokens)
        user = new_user(api.harness, credits=5)
        body = json.dumps([make_event(user), {"bad": True}]).encode()
        answer = lonely.call("POST", "/v1/events", "ingest", body)
        assert is_problem(answer, 503, "unavailable"), answer.body
        assert answer.headers["Retry-After"] == "5"
        assert [r["status"] for r in answer.body["results"]] == ["not_published", "rejected"]
        assert (answer.body["accepted"], answer.body["not_published"]) == (0, 1)
        ready = lonely.call("GET", "/readyz", None)
        assert is_problem(ready, 503, "unavailable") and ready.body["unavailable"] == ["kafka"]
    finally:
        stop(process)


def test_ready_metrics_and_no_token_in_the_log(api: Api) -> None:
    assert api.call("GET", "/readyz", None).status == 200
    user = new_user(api.harness, credits=5)
    api.call("GET", f"/v1/users/{user}/balance", "read")
    metrics = api.call("GET", "/metrics", None).body
    assert 'route="/v1/users/{user_id}/balance"' in metrics and str(user) not in metrics
    assert "usage_api_db_connections_max_in_use" in metrics
    log = api.log.read_text()
    assert all(token not in log for token in api.tokens.values())


def test_the_api_login_reads_and_cannot_write_the_books(api: Api) -> None:
    user = new_user(api.harness, credits=7)
    with psycopg.connect(api.api_db) as conn:
        row = conn.execute(
            "SELECT amount FROM user_credit_balance WHERE user_id = %s", (user,)
        ).fetchone()
        assert row == (7,)
    for statement in (
        "UPDATE user_credit_balance SET amount = amount + 1",
        "DELETE FROM api_keys",
        "INSERT INTO users (email) VALUES ('x@y.example')",
    ):
        assert refused(api.api_db, statement), statement


def test_the_openapi_document_is_valid_committed_and_matches_the_routes(api: Api) -> None:
    served = api.call("GET", "/openapi.json", None).body
    validate(served)
    assert served == json.loads(openapi.COMMITTED.read_text()), (
        "regenerate with: python -m pipeline api --print-openapi > schemas/openapi.json"
    )
    documented = {(m.upper(), p) for p, ops in served["paths"].items() for m in ops}
    assert documented == {(m, p) for m, p, _ in service.ROUTES}


LITELLM_RECORDED = REPO / "tests" / "fixtures" / "litellm-1.108.7"


def litellm_payload(name: str, key_user: str) -> dict[str, Any]:
    """A payload recorded from LiteLLM's proxy, as a new call of `key_user`'s key."""
    found = json.loads((LITELLM_RECORDED / f"{name}.json").read_text())
    recorded: dict[str, Any] = found[0] if isinstance(found, list) else found  # a call's logs
    recorded["litellm_call_id"] = str(uuid.uuid4())
    recorded["metadata"]["user_api_key_user_id"] = key_user
    return recorded


def test_litellm_generic_api_batches_book_linked_users_once_and_dead_letter_the_rest(
    api: Api, tmp_path: Path
) -> None:
    catalog = REPO / "data" / "litellm-model-prices-1.110.2.json"
    imported = CliRunner().invoke(
        main, ["prices", "import", "--litellm", str(catalog), "--effective-from",
               "2026-01-01T00:00:00+00:00"], env={"DATABASE_URL": api.db})  # fmt: skip
    assert imported.exit_code == 0, imported.output
    user = new_user(api.harness, credits=100_000)
    alice, stranger = f"alice-{uuid.uuid4().hex[:6]}", f"eve-{uuid.uuid4().hex[:6]}"
    linked = CliRunner().invoke(main, ["gateway-users", "link", "litellm", alice, str(user)],
                                env={"DATABASE_URL": api.db})  # fmt: skip
    assert linked.exit_code == 0, linked.output
    plain, cached = (
        litellm_payload("success", alice),
        litellm_payload("cached_anthropic_haiku45", alice),
    )
    unlinked = litellm_payload("success", stranger)
    no_provider = litellm_payload("failure_unknown_model", alice)

    batch = json.dumps([plain, cached, plain, unlinked, no_provider]).encode()  # json_array
    answer = api.call("POST", "/v1/ingest/litellm", "ingest", batch)
    assert answer.status == 202, answer.body
    assert [r["status"] for r in answer.body["results"]] == ["accepted"] * 4 + ["rejected"]
    assert answer.body["results"][4]["reason"] == "unknown_provider"
    ndjson = b"\n".join(json.dumps(p).encode() for p in (plain, cached))  # sent again, as ndjson
    again = api.call("POST", "/v1/ingest/litellm", "ingest", ndjson)  # LiteLLM says json
    assert again.status == 202 and again.body["accepted"] == 2
    assert is_problem(api.call("POST", "/v1/ingest/litellm", "read", batch), 403, "forbidden")

    ids = [answer.body["results"][i]["request_id"] for i in (0, 1)]
    api.harness.start_worker(tmp_path)
    try:
        api.harness.wait_booked(ids)
        wait_for(lambda: len(api.harness.dead_letters()) == 1, 60)
    finally:
        api.harness.stop_worker()
    rows = api.harness.query(
        "SELECT user_id, model_id, input_tokens, cached_input_tokens, cache_write_tokens, "
        "vendor_cost FROM token_usage_ledger WHERE request_id = ANY(%s::uuid[]) "
        "ORDER BY input_tokens", ids,
    )  # fmt: skip
    assert [r[:5] for r in rows] == [(user, "gpt-4o-mini", 10, 0, 0),
                                     (user, "claude-haiku-4-5-20251001", 3000, 1000, 500)]  # fmt: skip
    assert str(rows[1][5]) == "0.00242500"  # LiteLLM's own response_cost for that call
    [dead] = api.harness.dead_letters()
    assert dead.reason == "unknown_user" and repr(stranger) in dead.detail
