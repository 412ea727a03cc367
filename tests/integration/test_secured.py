"""The pipeline through secured endpoints, as against a managed Kafka and PostgreSQL (issue
11): the worker books over SASL_SSL (SCRAM) and a PostgreSQL with ``sslmode=verify-full``;
`publish` authenticates with PLAIN and SCRAM and the records read back over mutual TLS; a
wrong password or an untrusted certificate is one line naming the setting, a non-zero
exit, and nothing booked or acknowledged. The password shows up nowhere.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from pipeline.cli import main
from pipeline.ops.devstack import postgres
from pipeline.schema import logins, migrations, seed
from pipeline.stream import kafka_io
from pipeline.stream.kafka_access import KafkaAccess, tls_context
from tests.integration.pipeline_harness import REPO, Harness, free_port, make_event
from tests.integration.secured_stack import USER, SecuredStack, secured_stack
from tests.integration.test_pipeline import new_user

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def secured() -> Iterator[SecuredStack]:
    with secured_stack() as stack:
        yield stack


def sasl_env(stack: SecuredStack, mechanism: str = "SCRAM-SHA-512") -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": stack.sasl_ssl,
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": mechanism,
        "KAFKA_SASL_USERNAME": USER,
        "KAFKA_SASL_PASSWORD": stack.password,
        "KAFKA_SSL_CAFILE": str(stack.ca_pem),
    }


def mutual_tls(stack: SecuredStack) -> KafkaAccess:
    context = tls_context(stack.ca_pem, stack.client_cert, stack.client_key)
    return KafkaAccess(stack.mutual_tls, "SSL", ssl_context=context)


def books(stack: SecuredStack) -> tuple[str, str]:
    """A migrated, seeded database on the TLS server: the owner's and the worker's conninfo."""
    name = f"books_{uuid.uuid4().hex[:8]}"
    url = postgres.create_database(stack.database_url(), name)
    with psycopg.connect(url) as conn:
        migrations.migrate(conn)
        seed.seed(conn)
        return url, logins.worker_login_url(conn, url)


def read(access: KafkaAccess, topic: str) -> list[bytes]:
    async def collect() -> list[bytes]:
        return [r.value or b"" async for r in kafka_io.read_all(access, topic)]

    return asyncio.run(collect())


def test_the_worker_books_through_sasl_ssl_and_verified_tls_to_postgres(
    secured: SecuredStack, tmp_path: Path
) -> None:
    owner_url, worker_url = books(secured)
    env = sasl_env(secured)
    context = tls_context(secured.ca_pem, None, None)
    password = SecretStr(secured.password)
    access = KafkaAccess(secured.sasl_ssl, "SASL_SSL", "SCRAM-SHA-512", USER, password, context)
    web_port = free_port()
    h = Harness(
        owner_url, secured.sasl_ssl, access=access,
        env_overrides=env | {"WORKER_DATABASE_URL": worker_url, "LOG_FORMAT": "json",
                             "WORKER_WEB_PORT": str(web_port)},
    )  # fmt: skip
    user = new_user(h, credits=100_000)
    events = [make_event(user) for _ in range(30)]
    h.publish(events)
    h.start_worker(tmp_path)
    try:
        h.wait_booked([e["request_id"] for e in events])
        assert h.worker_sessions() == [(logins.WORKER_LOGIN, True)]
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{web_port}/metrics", timeout=10)
        exposition = metrics.read().decode()
        assert "usage_" in exposition and secured.password not in exposition
    finally:
        h.stop_worker()
    log = h.log_path.read_text() if h.log_path else ""
    assert secured.password not in log
    assert h.dead_letters() == []


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_publish_authenticates_and_the_records_read_back_over_mutual_tls(
    secured: SecuredStack, tmp_path: Path, mechanism: str
) -> None:
    topic = f"secured.{uuid.uuid4().hex[:8]}"
    lines = [json.dumps(make_event(uuid.uuid4())) for _ in range(5)]
    source = tmp_path / "events.jsonl"
    source.write_text("\n".join(lines) + "\n")
    env = sasl_env(secured, mechanism) | {"USAGE_TOPIC": topic}
    result = CliRunner().invoke(main, ["publish", str(source)], env=env)
    assert result.exit_code == 0, result.output
    assert f"published 5 events to {topic}" in result.output
    assert sorted(read(mutual_tls(secured), topic)) == sorted(x.encode() for x in lines)
    assert secured.password not in result.output


def refused_env(secured: SecuredStack, refusal: str) -> dict[str, str]:
    env = sasl_env(secured)
    if refusal == "KAFKA_SASL_PASSWORD":
        env["KAFKA_SASL_PASSWORD"] = "not-" + secured.password
    elif refusal == "KAFKA_SSL_CAFILE":
        env["KAFKA_SSL_CAFILE"] = str(secured.other_ca_pem)
    elif refusal == "KAFKA_SSL_CERTFILE":  # the mutual-TLS listener without a certificate
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": secured.mutual_tls,
            "KAFKA_SECURITY_PROTOCOL": "SSL",
            "KAFKA_SSL_CAFILE": str(secured.ca_pem),
        }
    return env


@pytest.mark.parametrize("refusal", ["KAFKA_SASL_PASSWORD", "KAFKA_SSL_CAFILE"])
def test_a_refused_publish_is_one_line_naming_the_setting(
    secured: SecuredStack, tmp_path: Path, refusal: str
) -> None:
    topic = f"refused.{uuid.uuid4().hex[:8]}"
    env = refused_env(secured, refusal) | {"USAGE_TOPIC": topic}
    event = json.dumps(make_event(uuid.uuid4()))
    result = CliRunner().invoke(main, ["publish", "-"], env=env, input=event + "\n")
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and refusal in lines[0], result.output
    assert secured.sasl_ssl in lines[0] and "Traceback" not in result.output
    assert secured.password not in result.output
    assert read(KafkaAccess(secured.plaintext), topic) == []


def test_a_mutual_tls_listener_without_a_client_certificate_is_one_line(
    secured: SecuredStack,
) -> None:
    env = refused_env(secured, "KAFKA_SSL_CERTFILE")
    result = CliRunner().invoke(main, ["dlq", "show"], env=env)
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "KAFKA_SECURITY_PROTOCOL=SSL" in lines[0], result.output
    assert secured.mutual_tls in lines[0]


@pytest.mark.parametrize(
    "refusal", ["KAFKA_SASL_PASSWORD", "KAFKA_SSL_CAFILE", "WORKER_DATABASE_URL"]
)
def test_a_refused_worker_exits_in_one_line_and_books_nothing(
    secured: SecuredStack, tmp_path: Path, refusal: str
) -> None:
    owner_url, worker_url = books(secured)
    if refusal == "WORKER_DATABASE_URL":  # a server certificate the client cannot trust
        worker_url = worker_url.replace(str(secured.ca_pem), str(secured.other_ca_pem))
        env = sasl_env(secured)
    else:
        env = refused_env(secured, refusal)
    h = Harness(owner_url, secured.plaintext)
    user = new_user(h, credits=100_000)
    events = [make_event(user) for _ in range(3)]
    h.publish(events)  # over PLAINTEXT: the events are there for the worker to refuse
    environment = h.env() | env | {"WORKER_DATABASE_URL": worker_url}
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "worker"], env=os.environ | environment, cwd=REPO,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and refusal in lines[0], done.stderr
    assert secured.password not in done.stderr + done.stdout
    assert h.booked([e["request_id"] for e in events]) == 0
    lag = asyncio.run(kafka_io.group_lag(h.kafka(), f"worker-{h.tag}", h.usage_topic))
    assert lag is None  # the group never committed: nothing acknowledged
