"""How every client of ours reaches Kafka: the bootstrap servers and the cluster's security
(TLS with a private CA or a client certificate, SASL PLAIN or SCRAM), built once from the
settings and handed to the worker's Faust app, `publish`, `dlq`, the demo and the bench.

The SASL password stays a `SecretStr` until the moment a client is built, and no repr,
log line or error shows it.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.errors import SaslAuthenticationFailed
from aiokafka.helpers import create_ssl_context
from pydantic import SecretStr

from pipeline.errors import PipelineError, first_line
from pipeline.settings import Settings, kafka_bootstrap


class TlsFileUnusable(PipelineError):
    """A KAFKA_SSL_* file cannot be read or is not what it should be."""


@dataclass(frozen=True, repr=False)
class KafkaAccess:
    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)

    def __repr__(self) -> str:
        user = f", user {self.sasl_username}" if self.sasl_username else ""
        return f"KafkaAccess({self.bootstrap}, {self.security_protocol}{user})"

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")


def from_settings(settings: Settings) -> KafkaAccess:
    """The access the settings describe; TlsFileUnusable names the file that cannot be used."""
    protocol = settings.kafka_security_protocol
    context = None
    if protocol.endswith("SSL"):
        context = tls_context(
            settings.kafka_ssl_cafile, settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile
        )
    return KafkaAccess(
        bootstrap=kafka_bootstrap(settings),
        security_protocol=protocol,
        sasl_mechanism=settings.kafka_sasl_mechanism,
        sasl_username=settings.kafka_sasl_username,
        sasl_password=settings.kafka_sasl_password,
        ssl_context=context,
    )


def tls_context(cafile: Path | None, certfile: Path | None, keyfile: Path | None) -> ssl.SSLContext:
    """A client TLS context that checks the brokers' certificates and host names against
    `cafile` (the system's CAs if None), presenting `certfile`/`keyfile` if given."""
    try:
        context: ssl.SSLContext = create_ssl_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise TlsFileUnusable(
            f"KAFKA_SSL_CAFILE={cafile}: no CA certificate there ({exc})"
        ) from None
    if certfile is not None:
        try:
            context.load_cert_chain(certfile, keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise TlsFileUnusable(
                f"KAFKA_SSL_CERTFILE={certfile}, KAFKA_SSL_KEYFILE={keyfile}: "
                f"no certificate with its key there ({exc})"
            ) from None
    return context


def client_options(access: KafkaAccess) -> dict[str, Any]:
    """The keyword arguments every aiokafka client (producer, consumer, admin) takes."""
    options: dict[str, Any] = {
        "bootstrap_servers": access.bootstrap,
        "security_protocol": access.security_protocol,
    }
    if access.ssl_context is not None:
        options["ssl_context"] = access.ssl_context
    if access.uses_sasl:
        assert access.sasl_password is not None  # the settings' validator requires it
        options["sasl_mechanism"] = access.sasl_mechanism
        options["sasl_plain_username"] = access.sasl_username
        options["sasl_plain_password"] = access.sasl_password.get_secret_value()
    return options


def faust_credentials(access: KafkaAccess) -> Any:
    """Faust's `broker_credentials` for this access (None for PLAINTEXT)."""
    import faust

    if access.uses_sasl:
        assert access.sasl_password is not None
        return faust.SASLCredentials(
            username=access.sasl_username,
            password=access.sasl_password.get_secret_value(),
            ssl_context=access.ssl_context,
            mechanism=access.sasl_mechanism,
        )
    if access.ssl_context is not None:
        return faust.SSLCredentials(access.ssl_context)
    return None


def refusal(access: KafkaAccess, cause: BaseException | None) -> str:
    """The one line for brokers we could not use, naming the setting to look at (never
    the password); `cause` is what refused the connection (`kafka_io.connection_fault`)."""
    where = f"Kafka at KAFKA_BOOTSTRAP_SERVERS={access.bootstrap}"
    if isinstance(cause, SaslAuthenticationFailed):
        return (
            f"{where} refused KAFKA_SASL_USERNAME={access.sasl_username} "
            f"(KAFKA_SASL_MECHANISM={access.sasl_mechanism}): check KAFKA_SASL_PASSWORD; "
            f"{first_line(cause)}"
        )
    if isinstance(cause, ssl.SSLCertVerificationError):
        return (
            f"{where} presented a certificate that KAFKA_SSL_CAFILE does not trust: "
            f"{cause.verify_message}"
        )
    protocol = f"KAFKA_SECURITY_PROTOCOL={access.security_protocol}"
    reason = first_line(cause) if cause is not None else "no broker answered"
    return f"cannot reach {where} ({protocol}): {reason}"
