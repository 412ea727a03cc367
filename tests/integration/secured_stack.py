"""A stack secured as managed services are: Kafka with SASL_SSL (PLAIN and SCRAM users) and
mutual-TLS listeners, PostgreSQL with ``ssl=on``, both with certificates of a throwaway CA.

The servers are `pipeline.ops.devstack`'s own (`kafka.start(secure=...)`,
`postgres.start(tls=...)`); the CA, the server's and a client's certificates come from
`trustme`. Kafka's PEM key store wants PKCS#8 keys, so the server key is written as one.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography.hazmat.primitives import serialization

from pipeline.ops.devstack import kafka, postgres, toolchain
from pipeline.ops.devstack.kafka_config import SecureListeners
from pipeline.ops.devstack.ports import LOOPBACK, free_ports
from pipeline.ops.devstack.state import StackPaths

USER = "gateway_pipeline"


@dataclass(frozen=True)
class SecuredStack:
    root: Path
    ca_pem: Path
    other_ca_pem: Path
    """A CA that signed nothing here: trusting it alone must fail."""
    client_cert: Path
    client_key: Path
    plaintext: str
    sasl_ssl: str
    mutual_tls: str
    password: str
    """USER's SASL password."""
    postgres_port: int

    def database_url(self, dbname: str = postgres.SUPERUSER, ca: Path | None = None) -> str:
        """Conninfo that checks the server's certificate and host name against `ca`."""
        return (
            f"{postgres.conninfo(self.postgres_port, dbname)}"
            f"?sslmode=verify-full&sslrootcert={ca or self.ca_pem}"
        )


def _pkcs8(key_pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(key_pem, None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@contextmanager
def secured_stack() -> Iterator[SecuredStack]:
    root = Path(tempfile.mkdtemp(prefix="usage-pipeline-secured-"))
    paths = StackPaths.of(root)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    trustme.CA().cert_pem.write_to_path(str(root / "other-ca.pem"))
    server = ca.issue_cert(LOOPBACK, "localhost")
    key = _pkcs8(server.private_key_pem.bytes())
    chain = b"".join(pem.bytes() for pem in server.cert_chain_pems)
    (root / "server.key").write_bytes(key)
    (root / "server.crt").write_bytes(chain)
    (root / "server.pem").write_bytes(key + chain)
    client = ca.issue_cert("usage-worker")
    client.cert_chain_pems[0].write_to_path(str(root / "client.crt"))
    client.private_key_pem.write_to_path(str(root / "client.key"))
    password = secrets.token_urlsafe(18)
    plain, controller, sasl_ssl, mutual, pg_port = free_ports(5, (), frozenset())
    secure = SecureListeners(
        sasl_ssl, mutual, root / "server.pem", root / "ca.pem", {USER: password}
    )
    try:
        broker = kafka.start(paths, plain, controller, 2, toolchain.DEFAULT_POM, print, secure)
        tls = postgres.ServerTls(root / "server.crt", root / "server.key")
        pg = postgres.start(paths, pg_port, tls)
        postgres.wait_ready(paths, pg, pg_port)
        kafka.wait_ready(paths, broker, plain)
        yield SecuredStack(
            root=root,
            ca_pem=root / "ca.pem",
            other_ca_pem=root / "other-ca.pem",
            client_cert=root / "client.crt",
            client_key=root / "client.key",
            plaintext=f"{LOOPBACK}:{plain}",
            sasl_ssl=f"{LOOPBACK}:{sasl_ssl}",
            mutual_tls=f"{LOOPBACK}:{mutual}",
            password=password,
            postgres_port=pg_port,
        )
    finally:
        try:
            kafka.stop(paths)
        finally:
            postgres.stop(paths)
            shutil.rmtree(root, ignore_errors=True)
