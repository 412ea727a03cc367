"""Kafka's security settings: read once, checked together, applied to every client, and the
password shown nowhere (issue 11)."""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import pytest
import trustme
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed
from click.testing import CliRunner
from pydantic import SecretStr, ValidationError

from pipeline.cli import main
from pipeline.settings import Settings
from pipeline.stream.kafka_access import (
    KafkaAccess,
    TlsFileUnusable,
    client_options,
    faust_credentials,
    from_settings,
    refusal,
    tls_context,
)

SECRET = "pa55-w0rd-never-shown"


def sasl_settings(**over: object) -> Settings:
    values: dict[str, object] = {
        "KAFKA_BOOTSTRAP_SERVERS": "broker-1:9096,broker-2:9096",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "pipeline",
        "KAFKA_SASL_PASSWORD": SECRET,
    }
    values.update(over)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


def test_sasl_ssl_settings_reach_every_aiokafka_client(ca_file: Path) -> None:
    access = from_settings(sasl_settings(KAFKA_SSL_CAFILE=str(ca_file)))
    options = client_options(access)
    assert options["bootstrap_servers"] == "broker-1:9096,broker-2:9096"
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("pipeline", SECRET)
    context = options["ssl_context"]
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname


def test_faust_gets_the_same_credentials(ca_file: Path) -> None:
    access = from_settings(sasl_settings(KAFKA_SSL_CAFILE=str(ca_file)))
    credentials = faust_credentials(access)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert credentials.password == SECRET and credentials.ssl_context is access.ssl_context
    tls_only = from_settings(
        Settings(  # type: ignore[call-arg]
            KAFKA_BOOTSTRAP_SERVERS="b:9093", KAFKA_SECURITY_PROTOCOL="SSL"
        )
    )
    assert isinstance(faust_credentials(tls_only), faust.SSLCredentials)
    assert faust_credentials(KafkaAccess("b:9092")) is None


def test_plaintext_sends_no_security_options() -> None:
    assert client_options(KafkaAccess("b:9092")) == {
        "bootstrap_servers": "b:9092",
        "security_protocol": "PLAINTEXT",
    }


def test_the_password_is_in_no_repr_or_settings_dump() -> None:
    settings = sasl_settings()
    access = from_settings(settings)
    assert SECRET not in repr(access) + str(access) + repr(settings)
    assert SECRET not in repr(faust_credentials(access))


@pytest.mark.parametrize(
    ("over", "named"),
    [
        ({"KAFKA_SASL_PASSWORD": None}, "KAFKA_SASL_PASSWORD"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL"}, "KAFKA_SASL_USERNAME"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "PLAINTEXT", "KAFKA_SASL_USERNAME": None,
             "KAFKA_SSL_CAFILE": "/ca.pem"},
            "KAFKA_SSL_CAFILE",
        ),
        ({"KAFKA_SSL_KEYFILE": "/key.pem"}, "KAFKA_SSL_CERTFILE"),
        ({"BROKER_SESSION_TIMEOUT": 6, "BROKER_HEARTBEAT_INTERVAL": 3}, "BROKER_HEARTBEAT_INTERVAL=3"),
    ],
)  # fmt: skip
def test_settings_that_do_not_fit_together_are_refused(over: dict[str, object], named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        sasl_settings(**over)


def test_the_cli_refuses_them_in_one_line(tmp_path: Path) -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "b:9096",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_PASSWORD": SECRET,
        "USAGE_PIPELINE_STATE_DIR": str(tmp_path),
    }
    result = CliRunner().invoke(main, ["dlq", "show"], env=env)
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert errors == [
        "Error: KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
    ]
    assert SECRET not in result.output


def test_a_tls_file_that_is_not_one_is_named(tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(TlsFileUnusable, match="KAFKA_SSL_CAFILE="):
        tls_context(junk, None, None)
    with pytest.raises(TlsFileUnusable, match="KAFKA_SSL_CERTFILE="):
        tls_context(None, tmp_path / "missing.pem", None)


def test_refusals_name_the_setting_to_look_at() -> None:
    access = KafkaAccess("b:9096", "SASL_SSL", "SCRAM-SHA-256", "pipeline", SecretStr(SECRET))
    failed = SaslAuthenticationFailed("Authentication failed due to invalid credentials")
    line = refusal(access, failed)
    assert "KAFKA_SASL_PASSWORD" in line and "KAFKA_SASL_USERNAME=pipeline" in line
    assert "KAFKA_BOOTSTRAP_SERVERS=b:9096" in line and SECRET not in line
    untrusted = ssl.SSLCertVerificationError(1, "certificate verify failed")
    untrusted.verify_message = "unable to get local issuer certificate"
    assert "KAFKA_SSL_CAFILE does not trust: unable to get local issuer" in refusal(
        access, untrusted
    )
    closed = KafkaConnectionError("Connection at b:9096 closed")
    assert refusal(access, closed) == (
        "cannot reach Kafka at KAFKA_BOOTSTRAP_SERVERS=b:9096 (KAFKA_SECURITY_PROTOCOL=SASL_SSL): "
        "KafkaConnectionError: Connection at b:9096 closed"
    )
